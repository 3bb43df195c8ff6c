"""Next-token AR (the AAR paper's baseline): one token per step over the token pyramid, causal attention, KV-cached sampling."""
