"""Multimodal image-to-image translation: the CEN translation recipe's loop (``train``), its
scores (``image_metrics``: L1, PSNR, SSIM, FID / KID with ``inception``), the export of a
generator to ONNX (``export``) and the synthetic translation modalities
(``synthetic_modalities``)."""
