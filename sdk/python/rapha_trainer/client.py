"""Protocol v1 client: framing, operations and typed errors."""

import json
import math
import os
import socket
import struct
from dataclasses import dataclass, field
from collections import deque
from typing import Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

# The protocol's constants, generated from crates/rapha-protocol (the node's own).
from ._protocol import (  # noqa: F401
    DTYPES,
    MAX_IN_FLIGHT,  # requests sent and not yet answered; the node disconnects beyond this
    MAX_PAGE,
    MAX_PAYLOAD,
    MAX_RESPONSE_HEADER,
    MAX_TRAINER_NAME,
    PROTOCOL_VERSION,
    SOCKET_ENV,
    SOCKET_PATH_IN_CONTAINER as DEFAULT_SOCKET,
)

PREFETCH_DEPTH = 8  # fetch requests Client.records keeps in flight

_DTYPES = {name: np.dtype(typestr) for name, typestr in DTYPES.items()}


class SdkError(Exception):
    """Anything that went wrong talking to the node."""


class FrameError(SdkError):
    """A malformed or oversized frame from the node; the connection is unusable."""


class RefusedError(SdkError):
    """The node answered ok:false. `error` is the protocol's error code."""

    def __init__(self, op: str, error: str, message: str):
        super().__init__(f"node refused {op}: {error}: {message}")
        self.op, self.error, self.message = op, error, message


@dataclass(frozen=True)
class JobInfo:
    job: str
    records: int
    train: int
    validation: int
    confinement: str


@dataclass(frozen=True)
class RecordMeta:
    index: int
    instance: str
    series: str
    study: str
    patient: str
    split: str  # "train" or "validation"
    label: Optional[int]  # only ever present on training records
    modality: str
    dtype: str
    shape: Tuple[int, int, int, int]  # frames, rows, columns, samples per pixel
    attributes: Dict[str, object] = field(default_factory=dict)

    def attr(self, keyword: str, default=None):
        v = self.attributes.get(keyword, default)
        if isinstance(v, list):
            return v[0] if v else default
        return v


@dataclass(frozen=True)
class Record:
    index: int
    pixels: np.ndarray  # shape (frames, rows, columns, samples), dtype from the node


class _Reader:
    """Buffered reads from the node: a frame's length, header and a small payload usually
    arrive in one recv; a large payload is received straight into its own buffer."""

    _DIRECT = 8192  # remainders at least this large skip the buffer

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = bytearray(1 << 16)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def _recv_into(self, view, n: int) -> int:
        k = self._sock.recv_into(view, n)
        if not k:
            raise FrameError("the node closed the connection")
        return k

    def read(self, n: int) -> bytearray:
        have = self._end - self._start
        if have >= n:
            out = self._buf[self._start:self._start + n]
            self._start += n
            return out
        out = bytearray(n)
        out[:have] = self._view[self._start:self._end]
        self._start = self._end = 0
        got = have
        if n - got >= self._DIRECT:
            view = memoryview(out)
            while got < n:
                got += self._recv_into(view[got:], n - got)
            return out
        while got < n:
            k = self._recv_into(self._view, len(self._buf))
            take = min(k, n - got)
            out[got:got + take] = self._view[:take]
            got += take
            self._start, self._end = take, k
        return out


def _read_frame(reader: _Reader):
    (hlen,) = struct.unpack("<I", reader.read(4))
    if hlen > MAX_RESPONSE_HEADER:
        raise FrameError(f"frame header of {hlen} bytes exceeds the protocol limit")
    try:
        header = json.loads(reader.read(hlen).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FrameError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise FrameError("header is not a JSON object")
    n = header.get("payload", 0)
    if not isinstance(n, int) or n < 0 or n > MAX_PAYLOAD:
        raise FrameError(f"payload size {n!r} is not allowed")
    return header, (reader.read(n) if n else b"")


def _field(h: dict, key: str, typ):
    v = h.get(key)
    if not isinstance(v, typ) or isinstance(v, bool) and typ is int:
        raise FrameError(f"missing or mistyped field {key!r}")
    return v


class Client:
    """A connection to the record feed."""

    def __init__(self, sock: socket.socket, trainer: str):
        self._sock = sock
        self._reader = _Reader(sock)
        self._desynchronised = False
        # The limit is in UTF-8 bytes: cut there, dropping a character split by the cut.
        name = trainer.encode("utf-8")[:MAX_TRAINER_NAME].decode("utf-8", errors="ignore")
        h, _ = self._call("hello", {"op": "hello", "protocol": PROTOCOL_VERSION, "trainer": name})
        if _field(h, "protocol", int) != PROTOCOL_VERSION:
            raise SdkError(f"node speaks protocol {h['protocol']}, this SDK speaks 1")
        self.info = JobInfo(
            job=_field(h, "job", str),
            records=_field(h, "records", int),
            train=_field(h, "train", int),
            validation=_field(h, "validation", int),
            confinement=_field(h, "confinement", str),
        )

    @classmethod
    def connect(cls, trainer: str, path: Optional[str] = None) -> "Client":
        path = path or os.environ.get(SOCKET_ENV, DEFAULT_SOCKET)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError as e:
            raise SdkError(f"cannot connect to the record feed at {path}: {e}") from None
        return cls(s, trainer)

    def _send(self, req: dict) -> None:
        if self._desynchronised:
            raise SdkError("the connection lost step with the node after a failed read; reconnect")
        body = json.dumps(req).encode()
        self._sock.sendall(struct.pack("<I", len(body)) + body)

    def _recv(self, op: str):
        h, payload = _read_frame(self._reader)
        ok = h.get("ok")
        if ok is True:
            return h, payload
        if ok is False:
            raise RefusedError(op, str(h.get("error", "unknown"))[:64], str(h.get("message", ""))[:1024])
        raise FrameError(f'{op} response has no boolean "ok"')

    def _call(self, op: str, req: dict):
        self._send(req)
        return self._recv(op)

    def list(self, offset: int = 0, limit: int = MAX_PAGE) -> List[RecordMeta]:
        h, _ = self._call("list", {"op": "list", "offset": offset, "limit": max(1, min(limit, MAX_PAGE))})
        out = []
        for r in _field(h, "records", list):
            split = _field(r, "split", str)
            if split not in ("train", "validation"):
                raise FrameError(f"unknown split {split[:16]!r}")
            label = r.get("label")
            if label is not None and label not in (0, 1):
                raise FrameError("label must be 0 or 1")
            shape = _field(r, "shape", list)
            if len(shape) != 4 or not all(isinstance(d, int) and 0 <= d <= 1 << 20 for d in shape):
                raise FrameError("shape must be [frames, rows, columns, samples]")
            dtype = _field(r, "dtype", str)
            if dtype not in _DTYPES:
                raise FrameError(f"unknown dtype {dtype[:16]!r}")
            out.append(RecordMeta(
                index=_field(r, "index", int), instance=_field(r, "instance", str),
                series=_field(r, "series", str), study=_field(r, "study", str),
                patient=_field(r, "patient", str), split=split, label=label,
                modality=_field(r, "modality", str), dtype=dtype, shape=tuple(shape),
                attributes=dict(r.get("attributes") or {}),
            ))
        return out

    def list_all(self) -> List[RecordMeta]:
        out: List[RecordMeta] = []
        while len(out) < self.info.records:
            page = self.list(len(out), MAX_PAGE)
            if not page:
                raise FrameError(f"node announced {self.info.records} records but listed {len(out)}")
            out.extend(page)
        return out

    def fetch(self, index: int) -> Record:
        """One record, one round trip. To read many, use records(), which pipelines."""
        self._send({"op": "fetch", "index": index})
        return self._recv_fetch(index)

    def _recv_fetch(self, index: int) -> Record:
        h, payload = self._recv("fetch")
        if h.get("index") != index:
            raise FrameError(f"fetch response is not for record {index}")
        dtype = _DTYPES.get(_field(h, "dtype", str))
        shape = _field(h, "shape", list)
        if dtype is None or len(shape) != 4:
            raise FrameError("fetch response has a bad dtype or shape")
        if not all(isinstance(d, int) for d in shape) or math.prod(shape) * dtype.itemsize != len(payload):
            raise FrameError(f"record {index}: payload of {len(payload)} bytes does not match {shape}")
        return Record(index, np.frombuffer(payload, dtype=dtype).reshape(shape))

    def records(self, indices: Iterable[int], depth: int = PREFETCH_DEPTH,
                skip_unavailable: bool = False) -> Iterator[Record]:
        """Records `indices` in that order, keeping up to `depth` fetch requests in flight (at
        most 16, the protocol's limit): the node decodes and sends the next records while the
        trainer works on this one. A record the node cannot serve raises RefusedError
        ("unavailable") at its turn, or is skipped with skip_unavailable=True. Closing the
        generator early reads the answers still in flight, so the connection stays usable."""
        depth = max(1, min(int(depth), MAX_IN_FLIGHT))
        pending = iter(indices)
        in_flight: Deque[int] = deque()
        try:
            while True:
                if len(in_flight) <= depth // 2:
                    # Top up half the window in one write: fewer system calls on both sides.
                    frames = []
                    while len(in_flight) < depth:
                        nxt = next(pending, None)
                        if nxt is None:
                            break
                        body = json.dumps({"op": "fetch", "index": int(nxt)}).encode()
                        frames.append(struct.pack("<I", len(body)) + body)
                        in_flight.append(int(nxt))
                    if frames:
                        if self._desynchronised:
                            raise SdkError("the connection lost step with the node after a failed read; reconnect")
                        self._sock.sendall(b"".join(frames))
                if not in_flight:
                    return
                index = in_flight.popleft()
                try:
                    rec = self._recv_fetch(index)
                except RefusedError as e:
                    if skip_unavailable and e.error == "unavailable":
                        continue
                    raise
                except SdkError:
                    if in_flight:
                        self._desynchronised = True
                    in_flight.clear()
                    raise
                yield rec
        finally:
            # Answers already requested are read and dropped so the next call gets its own.
            while in_flight and not self._desynchronised:
                in_flight.popleft()
                try:
                    _read_frame(self._reader)
                except (SdkError, OSError):
                    self._desynchronised = True

    def progress(self, epoch=None, step=None, loss=None, metrics=None) -> None:
        req = {"op": "progress"}
        for k, v in (("epoch", epoch), ("step", step), ("loss", loss), ("metrics", metrics)):
            if v is not None:
                req[k] = v
        self._call("progress", req)

    def predict(self, scores: Sequence[Tuple[int, float]]):
        accepted, remaining = 0, self.info.validation
        for i in range(0, len(scores), MAX_PAGE):
            chunk = [{"index": int(ix), "score": float(s)} for ix, s in scores[i:i + MAX_PAGE]]
            h, _ = self._call("predict", {"op": "predict", "predictions": chunk})
            accepted += _field(h, "accepted", int)
            remaining = _field(h, "remaining", int)
        return accepted, remaining

    def done(self):
        h, _ = self._call("done", {"op": "done"})
        self._sock.close()
        return _field(h, "predicted", int), _field(h, "validation", int)


class Cohort:
    """Every record of the job, with train and validation views and shuffled epochs."""

    def __init__(self, records: List[RecordMeta]):
        self.records = records

    @classmethod
    def load(cls, client: Client) -> "Cohort":
        return cls(client.list_all())

    def train(self) -> Iterator[RecordMeta]:
        return (r for r in self.records if r.split == "train" and r.label is not None)

    def validation(self) -> Iterator[RecordMeta]:
        return (r for r in self.records if r.split == "validation")

    def train_batches(self, batch: int, epoch: int) -> List[List[RecordMeta]]:
        order = list(self.train())
        np.random.default_rng(0x52415048 ^ epoch).shuffle(order)
        batch = max(1, batch)
        return [order[i:i + batch] for i in range(0, len(order), batch)]
