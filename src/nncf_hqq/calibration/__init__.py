"""
Self-written calibration text: token sequences that the model being compressed samples itself, as model inputs
whose activations weigh HQQ's error (and feed NNCF's AWQ and scale estimation when asked) when the user has no
data set.

- `parameters.py`: `SelfCalibrationParameters`;
- `generate.py`: the sampler (OpenVINO alone, the model's KV cache, seeded);
- `dataset.py`: token sequences as an `nncf.Dataset` of the stateful model's inputs;
- `self_written.py`: both, timed.
"""
