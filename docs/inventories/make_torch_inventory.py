"""Write docs/inventories/torch.inv: a Sphinx inventory of the PyTorch names proxyaug's docs use.

The docs build runs offline (CI and the developers' machines reach package registries only), so
it cannot download https://pytorch.org/docs/stable/objects.inv. This small inventory maps the
names our signatures and docstrings mention to their pages on pytorch.org; a build with network
access can use the full inventory instead: PROXYAUG_TORCH_INVENTORY=https://pytorch.org/docs/stable/objects.inv.

Run: python docs/inventories/make_torch_inventory.py
"""

import pathlib
import zlib

NAMES = {
    "torch.Tensor": ("py:class", "tensors.html#torch.Tensor"),
    "torch.device": ("py:class", "tensor_attributes.html#torch.device"),
    "torch.dtype": ("py:class", "tensor_attributes.html#torch.dtype"),
    "torch.Generator": ("py:class", "generated/torch.Generator.html#torch.Generator"),
    "torch.nn.Module": ("py:class", "generated/torch.nn.Module.html#torch.nn.Module"),
    "torch.nn.DataParallel": ("py:class", "generated/torch.nn.DataParallel.html#torch.nn.DataParallel"),
    "torch.nn.parallel.DistributedDataParallel": (
        "py:class", "generated/torch.nn.parallel.DistributedDataParallel.html#torch.nn.parallel.DistributedDataParallel"),
    "torch.utils.data.Dataset": ("py:class", "data.html#torch.utils.data.Dataset"),
    "torch.utils.data.DataLoader": ("py:class", "data.html#torch.utils.data.DataLoader"),
    "torch.utils.data.TensorDataset": ("py:class", "data.html#torch.utils.data.TensorDataset"),
    "torch.compile": ("py:function", "generated/torch.compile.html#torch.compile"),
    "torch.autograd.grad": ("py:function", "generated/torch.autograd.grad.html#torch.autograd.grad"),
    "torch.no_grad": ("py:class", "generated/torch.no_grad.html#torch.no_grad"),
    "torch.autocast": ("py:class", "amp.html#torch.autocast"),
    "torch.nn.functional.interpolate": ("py:function", "generated/torch.nn.functional.interpolate.html#torch.nn.functional.interpolate"),
}


def main() -> None:
    header = b"# Sphinx inventory version 2\n# Project: PyTorch\n# Version: stable\n# The remainder of this file is compressed using zlib.\n"
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, (role, uri) in sorted(NAMES.items()))
    out = pathlib.Path(__file__).with_name("torch.inv")
    out.write_bytes(header + zlib.compress(body.encode()))
    print(f"wrote {out} ({len(NAMES)} names)")


if __name__ == "__main__":
    main()
