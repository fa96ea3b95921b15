"""
Self-written calibration text: token sequences that the model being compressed samples itself, as model inputs
for NNCF's data-aware algorithms (AWQ, scale estimation) when the user has no data set.

- `parameters.py`: `SelfCalibrationParameters`;
- `generate.py`: the sampler (OpenVINO alone, the model's KV cache, seeded);
- `dataset.py`: token sequences as an `nncf.Dataset` of the stateful model's inputs;
- `self_written.py`: both, timed.
"""
