"""The format-aware loader fuzzer (``tests/checkpoint_fuzz.py``) for a few
hundred cases: no mutant loads as anything but a model that saves back to
the same file; every other one is refused with ValueError, quickly. The
long run is ``python tests/checkpoint_fuzz.py --seconds 600``."""

import checkpoint_fuzz


def test_no_mutant_loads_as_a_model_fastmlp_could_not_have_saved():
    n, findings = checkpoint_fuzz.run(cases=600, seed=1, log=lambda line: None)
    assert n == 600
    assert not findings, findings[:5]


def test_the_oracle_catches_a_file_that_loads_as_something_else(tmp_path):
    """A loader that fills a missing field with a default is caught."""
    import json

    import fastmlp
    path = checkpoint_fuzz.good_files(str(tmp_path))[0]
    tensors, meta = checkpoint_fuzz.parts(path)
    config = json.loads(meta["config"])
    del config["activation"]
    meta = {**meta, "config": json.dumps(config)}
    assert checkpoint_fuzz.check(path, tensors, meta, str(tmp_path)) is not None
    model = fastmlp.load(path, device="cpu")           # the good file itself round-trips
    assert model.activation == "relu"
    tensors, meta = checkpoint_fuzz.parts(path)
    assert checkpoint_fuzz.check(path, tensors, meta, str(tmp_path)) is None
