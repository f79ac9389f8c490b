"""The torch side of mammo-cad (distribution ``mammo-cad-torch``): the networks (torchvision
RetinaNet and the second stage), the PyTorch reference runtime, the TensorRT runtime and the
exports (ONNX, int8, TensorRT engines built on a site's GPU).

Not part of the site install: a GPU host installs it for TensorRT; development installs it to
train, export and compare. It joins the device through entry points only (``cad.runtimes`` for
the runtimes, ``cad.commands`` for `cad export`); the device never imports it (import contract
``site-without-torch``).
"""
