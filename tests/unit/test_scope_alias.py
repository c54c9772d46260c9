"""A wrapper level an exporter left out of the ONNX scopes is learned from both graphs, never assumed."""
from diffcore.match.scope_alias import dropped_wrapper_aliases


def test_a_dropped_wrapper_level_maps_its_descendants():
    torch_paths = ["0", "0.model", "0.model.encoder.layer.0", "0.model.encoder.layer.1", "0.model.pooler"]
    scopes = ["0", "0.encoder.layer.0", "0.encoder.layer.1", "0.pooler"]
    assert dropped_wrapper_aliases(torch_paths, scopes) == {
        "0.model.encoder.layer.0": "0.encoder.layer.0", "0.model.encoder.layer.1": "0.encoder.layer.1",
        "0.model.pooler": "0.pooler"}


def test_paths_already_scopes_and_single_coincidences_are_left_alone():
    assert dropped_wrapper_aliases(["a.b", "a.b.c"], ["a.b", "a.c"]) == {}  # one vote is a coincidence
    assert dropped_wrapper_aliases(["enc.x", "enc.y"], ["enc.x", "enc.y", "x", "y"]) == {}
