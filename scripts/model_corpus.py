#!/usr/bin/python3
"""Writes the output guard's corpus of honest model files (issue 18, item 8).

Each architecture is built with PyTorch (Debian's python3-torch) at reduced widths: what
matters to the guard is the tensor names, the safetensors header layout and the torch.save
archive layout, not the sizes. Each model is written twice:

  <name>.pt            torch.save(model.state_dict())  (the zip archive format)
  <name>.safetensors   the safetensors layout, written here from the same tensors (Debian has
                       no safetensors package): 8-byte little-endian header length, a JSON
                       header sorted by name with dtype/shape/data_offsets and
                       __metadata__ {"format": "pt"}, padded with spaces to 8 bytes, then
                       the tensor bytes in header order.

Usage: model_corpus.py OUT_DIR
"""

import json
import os
import struct
import sys

import torch
from torch import nn

torch.manual_seed(18)


# --- ResNet-18 (torchvision names), widths / 8 ----------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )


class ResNet18(nn.Module):
    def __init__(self, width=8, classes=2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, mult in enumerate([1, 2, 4, 8], start=1):
            cout = width * mult
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride),
                                                       BasicBlock(cout, cout, 1)))
            cin = cout
        self.fc = nn.Linear(cin, classes)


# --- ViT (timm names: blocks.N.attn.qkv, head), depth 4, dim 32 -----------------------------
class Attention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * 4)
        self.fc2 = nn.Linear(dim * 4, dim)


class ViTBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)


class PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, 16, 16)


class ViT(nn.Module):
    def __init__(self, dim=32, depth=4, classes=2, patches=16):
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)


# --- GPT-2 (Hugging Face names: transformer.h.N.attn.c_attn, lm_head), 2 layers, dim 32 ------
class Conv1D(nn.Module):
    def __init__(self, nx, nf):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))


class GPT2Attention(nn.Module):
    def __init__(self, dim, ctx):
        super().__init__()
        self.register_buffer("bias", torch.tril(torch.ones(ctx, ctx, dtype=torch.uint8))
                             .view(1, 1, ctx, ctx))
        self.register_buffer("masked_bias", torch.tensor(-1e4))
        self.c_attn = Conv1D(dim, dim * 3)
        self.c_proj = Conv1D(dim, dim)


class GPT2MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = Conv1D(dim, dim * 4)
        self.c_proj = Conv1D(dim * 4, dim)


class GPT2Block(nn.Module):
    def __init__(self, dim, ctx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = GPT2Attention(dim, ctx)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = GPT2MLP(dim)


class GPT2Model(nn.Module):
    def __init__(self, vocab, dim, ctx, layers):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(ctx, dim)
        self.h = nn.ModuleList([GPT2Block(dim, ctx) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, vocab=512, dim=32, ctx=64, layers=2):
        super().__init__()
        self.transformer = GPT2Model(vocab, dim, ctx, layers)
        self.lm_head = nn.Linear(dim, vocab, bias=False)


# --- BERT (Hugging Face names, including the capitalised LayerNorm), 2 layers ---------------
class BertSelfAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)


class BertSelfOutput(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.LayerNorm = nn.LayerNorm(dim)


class BertAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        setattr(self, "self", BertSelfAttention(dim))
        self.output = BertSelfOutput(dim)


class BertLayer(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.attention = BertAttention(dim)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(dim, dim * 4)
        self.output = nn.Module()
        self.output.dense = nn.Linear(dim * 4, dim)
        self.output.LayerNorm = nn.LayerNorm(dim)


class Bert(nn.Module):
    def __init__(self, vocab=512, dim=32, layers=2):
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(vocab, dim)
        self.embeddings.position_embeddings = nn.Embedding(64, dim)
        self.embeddings.token_type_embeddings = nn.Embedding(2, dim)
        self.embeddings.LayerNorm = nn.LayerNorm(dim)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([BertLayer(dim) for _ in range(layers)])
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, 2)


# --- UNet (diffusers names: down_blocks.N.resnets.M, mid_block.attentions.0, up_blocks) -----
class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.norm1 = nn.GroupNorm(4, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(4, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.conv_shortcut = nn.Conv2d(cin, cout, 1)


class AttnProcessorBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])


class TransformerBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = AttnProcessorBlock(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = AttnProcessorBlock(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Module()
        self.ff.net = nn.ModuleList([nn.Linear(dim, dim * 2), nn.Identity(),
                                     nn.Linear(dim * 2, dim)])


class Transformer2D(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.GroupNorm(4, dim)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(dim)])
        self.proj_out = nn.Conv2d(dim, dim, 1)


class DownBlock(nn.Module):
    def __init__(self, cin, cout, temb, attn, down):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin, cout, temb), ResnetBlock(cout, cout, temb)])
        if attn:
            self.attentions = nn.ModuleList([Transformer2D(cout), Transformer2D(cout)])
        if down:
            self.downsamplers = nn.ModuleList([nn.Module()])
            self.downsamplers[0].conv = nn.Conv2d(cout, cout, 3, 2, 1)


class UpBlock(nn.Module):
    def __init__(self, cin, cout, temb, attn, up):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin + cout, cout, temb)
                                      for _ in range(3)])
        if attn:
            self.attentions = nn.ModuleList([Transformer2D(cout) for _ in range(3)])
        if up:
            self.upsamplers = nn.ModuleList([nn.Module()])
            self.upsamplers[0].conv = nn.Conv2d(cout, cout, 3, padding=1)


class MidBlock(nn.Module):
    def __init__(self, dim, temb):
        super().__init__()
        self.attentions = nn.ModuleList([Transformer2D(dim)])
        self.resnets = nn.ModuleList([ResnetBlock(dim, dim, temb), ResnetBlock(dim, dim, temb)])


class UNet2DConditionModel(nn.Module):
    def __init__(self, ch=(8, 16), temb=32):
        super().__init__()
        self.conv_in = nn.Conv2d(4, ch[0], 3, padding=1)
        self.time_embedding = nn.Module()
        self.time_embedding.linear_1 = nn.Linear(ch[0], temb)
        self.time_embedding.linear_2 = nn.Linear(temb, temb)
        self.down_blocks = nn.ModuleList([DownBlock(ch[0], ch[0], temb, True, True),
                                          DownBlock(ch[0], ch[1], temb, False, False)])
        self.mid_block = MidBlock(ch[1], temb)
        self.up_blocks = nn.ModuleList([UpBlock(ch[1], ch[1], temb, False, True),
                                        UpBlock(ch[1], ch[0], temb, True, False)])
        self.conv_norm_out = nn.GroupNorm(4, ch[0])
        self.conv_out = nn.Conv2d(ch[0], 4, 3, padding=1)


# --- The classic segmentation UNet (inc / down1 / up1 / outc names), a medical staple --------
class DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True))


class Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, 2, 2)
        self.conv = DoubleConv(cin, cout)


class SegUNet(nn.Module):
    def __init__(self, w=4):
        super().__init__()
        self.inc = DoubleConv(1, w)
        self.down1 = Down(w, w * 2)
        self.down2 = Down(w * 2, w * 4)
        self.up1 = Up(w * 4, w * 2)
        self.up2 = Up(w * 2, w)
        self.outc = nn.Module()
        self.outc.conv = nn.Conv2d(w, 1, 1)


DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, state):
    # A deliberate duplicate (issue 23) of the SDK's writer (sdk/python/rapha_trainer/outputs.py
    # write_safetensors): this one writes the layout PyTorch's exporters do (sorted names,
    # compact header, __metadata__), every dtype, as an independent witness for the output
    # guard; reusing the SDK's would test the guard against the SDK's layout only.
    header, chunks, at = {}, [], 0
    for name in sorted(state):
        t = state[name]
        b = tensor_bytes(t)
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [at, at + len(b)]}
        chunks.append(b)
        at += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in chunks:
            f.write(b)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    models = {
        "resnet18": ResNet18(),
        "vit-small": ViT(),
        "gpt2-mini": GPT2LMHeadModel(),
        "bert-mini": Bert(),
        "unet2d-condition": UNet2DConditionModel(),
        "unet-segmentation": SegUNet(),
    }
    for name, model in models.items():
        for p in model.parameters():
            nn.init.normal_(p, std=0.05)
        state = model.state_dict()
        torch.save(state, os.path.join(out, f"{name}.pt"))
        write_safetensors(os.path.join(out, f"{name}.safetensors"), state)
        # A half-precision copy: other dtypes, other offsets.
        half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
        write_safetensors(os.path.join(out, f"{name}-f16.safetensors"), half)
    print(f"    wrote {len(models)} models to {out} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
