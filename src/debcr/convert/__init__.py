"""Convert the original TensorFlow m-rBCR weights to PyTorch."""
