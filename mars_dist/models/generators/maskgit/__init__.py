"""MaskGIT (SpecMaskGIT's scheme): bidirectional transformer over the token pyramid, iterative parallel decoding."""
