"""Audio plumbing: frames, re-framing, resampling, G.711 and WAV."""
