"""The spectrogram tokenizer: ViT encoder/decoder, shared multi-scale quantizer, PatchGAN."""
