# Shared by ./scripts/test and ./scripts/demo. Every step is idempotent: a second run finds
# what the first installed and installs nothing.
# shellcheck shell=bash

RAPHA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RAPHA_CACHE="${RAPHA_CACHE:-$HOME/.cache/rapha}"
# Outside the clone, so CI's fresh clone reuses an earlier build on the same machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RAPHA_CACHE/target}"
export RAPHA_ANVIL="${RAPHA_ANVIL:-$RAPHA_CACHE/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}"
export RAPHA_SOLCJS="${RAPHA_SOLCJS:-$RAPHA_CACHE/npm/node_modules/solc/solc.js}"
export RAPHA_NODE_MODULES="${RAPHA_NODE_MODULES:-$RAPHA_CACHE/npm/node_modules}"
export RAPHA_PYTHON="${RAPHA_PYTHON:-$RAPHA_CACHE/venv/bin/python}"
export RAPHA_PYDICOM_CORPUS="${RAPHA_PYDICOM_CORPUS:-$RAPHA_CACHE/pydicom-corpus}"
export RAPHA_MODEL_CORPUS="${RAPHA_MODEL_CORPUS:-$RAPHA_CACHE/model-corpus}"
mkdir -p "$RAPHA_CACHE"

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages the real components need: Orthanc + DICOMweb (PACS), swtpm + tpm2-tools
# (TPM), libtss2-dev (tss-esapi), runc (trainer isolation), iproute2 (test hosts), socat (TLS
# front of the test Orthanc: Debian's Orthanc crashes on its own HTTPS), openssl (test certs),
# skopeo (a real OCI tool that reads our image layouts and writes oci-archives for the tests),
# python3-torch (writes the output guard's corpus of real model files; Debian has no
# safetensors package, so scripts/model_corpus.py writes that layout itself), mmdebstrap and
# buildah (build the PyTorch example's image from Debian's archive, no container registry:
# trainers/pytorch-lesion/build.sh), umoci (bench/pytorch.sh compares its unpack with ours),
# openjph-tools (`ojph_compress` writes the HTJ2K test files: pydicom's corpus has none),
# dcmtk and libopenjp2-tools (with ojph_compress, the encoders of `rapha-testkit cohort
# --transfer-syntax`: a synthetic cohort stored as a compressing archive stores it),
# libcharls-dev, libgdcm-dev and libopenjph-dev (CharLS, GDCM's 12-bit IJG library and OpenJPH
# with their headers: the C and C++ decoders the sandboxed `rapha-decode` worker is built
# against; libdcmtk-dev ships no IJG headers, libjpeg-turbo 2.1.5 no 12-bit API); curl and
# util-linux (`unshare`: the documented demo walkthrough runs as written, in its own network
# namespace, by crates/rapha-demo/tests/walkthrough.rs); chromium and chromium-driver (the
# console's browser test drives headless Chromium over WebDriver).
DEBIAN_PACKAGES=(orthanc orthanc-dicomweb swtpm swtpm-tools tpm2-tools libtss2-dev runc iproute2
    pkg-config socat openssl skopeo python3-torch mmdebstrap buildah umoci openjph-tools
    dcmtk libopenjp2-tools libcharls-dev libgdcm-dev libopenjph-dev curl util-linux chromium
    chromium-driver)

install_debian_packages() {
    local missing=()
    for p in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        note "Debian packages: all present (${#DEBIAN_PACKAGES[@]})"
        return
    fi
    note "Debian packages to install: ${missing[*]}"
    as_root apt-get update -q
    # Orthanc's postinst tries to start a system service; the harness starts its own instances.
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# npm: anvil (local chain), solc (escrow contract), OpenZeppelin contracts, axe-core (the
# console's accessibility check, injected from its file into the browser test's pages).
NPM_PACKAGES=("@foundry-rs/anvil-linux-amd64@1.7.1" "solc@0.8.28" "@openzeppelin/contracts@5.1.0"
    "axe-core@4.14.1")

install_npm_packages() {
    local want="${NPM_PACKAGES[*]}"
    if [ -f "$RAPHA_CACHE/npm/.installed" ] && [ "$(cat "$RAPHA_CACHE/npm/.installed")" = "$want" ]; then
        note "npm packages: present ($want)"
        return
    fi
    note "npm install $want"
    mkdir -p "$RAPHA_CACHE/npm"
    (cd "$RAPHA_CACHE/npm" && npm install --no-audit --no-fund --loglevel=error "${NPM_PACKAGES[@]}")
    echo "$want" >"$RAPHA_CACHE/npm/.installed"
}

# Python: a venv with the independent tools the tests compare against. The pylibjpeg plugins
# are pydicom's reference decoders for JPEG 2000 / HTJ2K (OpenJPEG) and JPEG-LS / 12-bit JPEG
# (libjpeg).
PYTHON_PACKAGES=("pydicom==3.0.2" "numpy<3" "regopy==1.5.2" "eth-account==0.14.0" "rfc8785==0.1.4"
    "pylibjpeg==2.1.0" "pylibjpeg-openjpeg==2.6.0" "pylibjpeg-libjpeg==2.5.0")

install_python_packages() {
    local want="${PYTHON_PACKAGES[*]}"
    if [ -x "$RAPHA_PYTHON" ] && [ -f "$RAPHA_CACHE/venv/.installed" ] \
        && [ "$(cat "$RAPHA_CACHE/venv/.installed")" = "$want" ]; then
        note "python venv: present ($want)"
        return
    fi
    note "python venv at $RAPHA_CACHE/venv: ${PYTHON_PACKAGES[*]}"
    python3 -m venv "$RAPHA_CACHE/venv"
    "$RAPHA_CACHE/venv/bin/pip" install -q --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
    echo "$want" >"$RAPHA_CACHE/venv/.installed"
}

# pydicom 3.0.2's wheel ships ~90 real DICOM files (many transfer syntaxes, some malformed):
# the public corpus for decode and bad-input tests. Extracted, never committed.
fetch_pydicom_corpus() {
    if [ -f "$RAPHA_PYDICOM_CORPUS/.complete" ]; then
        note "pydicom corpus: present ($(find "$RAPHA_PYDICOM_CORPUS" -type f -name '*.dcm' | wc -l) .dcm files)"
        return
    fi
    local tmp
    tmp="$(mktemp -d)"
    note "pip download pydicom==3.0.2 (wheel) -> $RAPHA_PYDICOM_CORPUS"
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" pydicom==3.0.2
    rm -rf "$RAPHA_PYDICOM_CORPUS"
    mkdir -p "$RAPHA_PYDICOM_CORPUS"
    python3 - "$tmp"/pydicom-3.0.2-*.whl "$RAPHA_PYDICOM_CORPUS" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
n = 0
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith("pydicom/data/test_files/") and not name.endswith("/"):
            rel = name[len("pydicom/data/test_files/"):]
            dest = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as dst:
                dst.write(src.read())
            n += 1
print(f"    extracted {n} files")
PY
    rm -rf "$tmp"
    touch "$RAPHA_PYDICOM_CORPUS/.complete"
}

# Honest model files (safetensors and torch.save archives of ResNet-18, ViT, GPT-2, BERT and
# two UNets, small widths) that the output guard must pass whatever the cohort's names are.
# Regenerated only when scripts/model_corpus.py changes. Debian's python3, not the venv: that
# is where python3-torch is.
generate_model_corpus() {
    local want
    want="$(sha256sum "$RAPHA_ROOT/scripts/model_corpus.py" | cut -d' ' -f1)"
    if [ -f "$RAPHA_MODEL_CORPUS/.complete" ] && [ "$(cat "$RAPHA_MODEL_CORPUS/.complete")" = "$want" ]; then
        note "model corpus: present ($(find "$RAPHA_MODEL_CORPUS" -type f ! -name .complete | wc -l) files)"
        return
    fi
    rm -rf "$RAPHA_MODEL_CORPUS"
    /usr/bin/python3 "$RAPHA_ROOT/scripts/model_corpus.py" "$RAPHA_MODEL_CORPUS"
    echo "$want" >"$RAPHA_MODEL_CORPUS/.complete"
}

install_all() {
    step "Installing what the real components need (idempotent)"
    install_debian_packages
    install_npm_packages
    install_python_packages
    fetch_pydicom_corpus
    generate_model_corpus
}
