"""PyTorch side of test/interop_test.ts: torchvision models with random weights, written and read
as safetensors (the format written here by hand, so the `safetensors` package is not needed).

  python3 torch_parity.py export MODEL SIZE DIR   # DIR/weights.safetensors, DIR/io.safetensors
  python3 torch_parity.py check MODEL SIZE DIR    # loads DIR/ours.safetensors (strict), compares
                                                  # its logits on DIR/ours_io.safetensors' x
"""
import json
import struct
import sys

import torch
import torch.nn as nn
import torchvision

DT = {torch.float32: "F32", torch.int64: "I64"}
FROM = {"F32": torch.float32, "I64": torch.int64}


def save(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        b = t.numpy().tobytes()
        header[name] = {"dtype": DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        buf = bytearray(raw[8 + n + a : 8 + n + b])
        out[name] = torch.frombuffer(buf, dtype=FROM[e["dtype"]]).reshape(e["shape"]).clone()
    return out


class LeNet5(nn.Module):
    """daint8's LeNet-5 in PyTorch (NCHW flatten before fc1)."""

    def __init__(self, cin=1, size=28, classes=10):
        super().__init__()
        side = (size // 2 - 4) // 2
        self.conv1 = nn.Conv2d(cin, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def build(name, size):
    if name == "lenet5":
        return LeNet5(3, size, 10)
    return getattr(torchvision.models, name)(num_classes=10)


def main():
    mode, name, size, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    torch.manual_seed(0)
    model = build(name, size)
    if mode == "export":
        with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        model.eval()
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            logits = model(x)
        save(f"{d}/weights.safetensors", model.state_dict())
        save(f"{d}/io.safetensors", {"x": x.permute(0, 2, 3, 1), "logits": logits})
        return
    model.load_state_dict(load(f"{d}/ours.safetensors"), strict=True)
    model.eval()
    io = load(f"{d}/ours_io.safetensors")
    with torch.no_grad():
        logits = model(io["x"].permute(0, 3, 1, 2).contiguous())
    diff = (logits - io["logits"]).abs().max().item()
    scale = io["logits"].abs().max().item()
    print(f"max |diff| {diff:.3g} (max |logit| {scale:.3g})")
    sys.exit(0 if diff <= 1e-3 * max(1.0, scale) else 1)


if __name__ == "__main__":
    main()
