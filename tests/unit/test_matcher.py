"""Matching strategies on synthetic probes: every pair says how it matched, nothing is dropped silently."""
from diffcore.capture.base import Probe
from diffcore.match import match_probes, reconcile_shapes


def torch_probe(key, order, shape=(2, 4), module=None, output_index=None):
    return Probe(key, order, shape, "float32", module=module if module is not None else
                 (None if output_index is not None else key.split("#")[0]), op_type="Linear",
                 output_index=output_index)


def onnx_probe(key, order, shape=(2, 4), modules=(), node=None, output_index=None, **meta):
    return Probe(key, order, shape, "float32", module=modules[0] if modules else None, op_type="Add",
                 node=node or f"node_{key}", output_index=output_index,
                 meta={"modules": list(modules), **meta})


def test_torch_vs_torch_matches_by_module_path_and_outputs_by_position():
    ref = [torch_probe("a", 0), torch_probe("b", 1), torch_probe("output", 2, output_index=0)]
    test = [torch_probe("a", 0), torch_probe("b", 1), torch_probe("output", 2, output_index=0)]
    result = match_probes(ref, test)
    assert [(p.name, p.method) for p in result.layer_pairs] == [("a", "name"), ("b", "name")]
    assert [(p.name, p.method) for p in result.output_pairs] == [("output", "output")]
    assert result.unmatched == []


def test_torch_vs_onnx_pairs_module_outputs_with_values_leaving_their_scope():
    ref = [torch_probe("blocks.0.ln", 0), torch_probe("blocks.0.mlp.2", 1), torch_probe("blocks.0.mlp", 2),
           torch_probe("blocks.0.drop", 3), torch_probe("output", 4, output_index=0)]
    test = [onnx_probe("/blocks.0/ln/LayerNormalization_output_0", 0, modules=["blocks.0.ln"]),
            onnx_probe("/blocks.0/mlp/mlp.0/MatMul_output_0", 1),
            onnx_probe("/blocks.0/mlp/mlp.2/Add_output_0", 2, modules=["blocks.0.mlp.2", "blocks.0.mlp"]),
            onnx_probe("y", 3, modules=["head"], output_index=0)]
    result = match_probes(ref, test)
    pairs = {p.name: (p.test.key, p.method) for p in result.pairs}
    assert pairs["blocks.0.ln"] == ("/blocks.0/ln/LayerNormalization_output_0", "module-scope")
    assert pairs["blocks.0.mlp.2"][0] == pairs["blocks.0.mlp"][0] == "/blocks.0/mlp/mlp.2/Add_output_0"
    assert pairs["y"] == ("y", "output")  # outputs are named after the ONNX output where there is one
    reasons = {u.key: u.reason for u in result.unmatched}
    assert "folded or removed by the exporter" in reasons["blocks.0.drop"]
    assert "internal ONNX value" in reasons["/blocks.0/mlp/mlp.0/MatMul_output_0"]


def test_repeated_module_calls_pair_in_execution_order():
    ref = [torch_probe("shared", 0), torch_probe("shared#1", 1, module="shared")]
    test = [onnx_probe("v1", 0, modules=["shared"]), onnx_probe("v2", 1, modules=["shared"])]
    result = match_probes(ref, test)
    assert [(p.ref.key, p.test.key) for p in result.pairs] == [("shared", "v1"), ("shared#1", "v2")]


def test_onnx_vs_float16_onnx_sees_through_inserted_casts_and_renamed_outputs():
    ref = [onnx_probe("h", 0, node="n_h"), onnx_probe("y", 1, node="/head/Add", output_index=0)]
    test = [onnx_probe("x_cast_to_n_h", 0, node="cast0", cast_of="x"), onnx_probe("h", 1, node="n_h"),
            onnx_probe("/head/Add_cast_to_y", 2, node="/head/Add"),
            onnx_probe("y", 3, node="cast1", output_index=0, cast_of="/head/Add_cast_to_y")]
    result = match_probes(ref, test)
    got = sorted((p.ref.key, p.test.key, p.method) for p in result.pairs)
    assert got == [("h", "h", "name"), ("y", "y", "name"), ("y", "y", "output")]
    reasons = {u.key: u.reason for u in result.unmatched}
    assert reasons == {"x_cast_to_n_h": "inserted Cast of 'x' (the same tensor in another dtype)",
                       "/head/Add_cast_to_y": "input of the inserted Cast to 'y' (compared as 'y')"}


def test_a_renamed_value_matches_through_its_producing_node():
    ref = [onnx_probe("a", 0, node="n1")]
    test = [onnx_probe("a_renamed", 0, node="n1")]
    result = match_probes(ref, test)
    assert [(p.ref.key, p.test.key, p.method) for p in result.pairs] == [("a", "a_renamed", "node")]


def test_shapes_are_reconciled_or_reported():
    assert reconcile_shapes((2, 1, 4), (2, 4))[0]
    ok, note = reconcile_shapes((8, 4), (2, 4, 4))
    assert ok and "flattened" in note
    ok, note = reconcile_shapes((2, 4), (2, 5))
    assert not ok and "ref (2, 4) vs test (2, 5)" in note
    result = match_probes([torch_probe("a", 0, shape=(2, 4))], [torch_probe("a", 0, shape=(2, 5))])
    assert result.pairs == [] and {u.side for u in result.unmatched} == {"ref", "test"}
    assert all("shape differs" in u.reason for u in result.unmatched)


def test_onnx_vs_onnx_pairs_renamed_boundaries_of_the_same_module():
    ref = [onnx_probe("/ln/ReduceMean_output_0", 0), onnx_probe("/ln/Add_1_output_0", 1, modules=["ln"])]
    test = [onnx_probe("/ln/LayerNormalization_output_0", 0, modules=["ln"])]
    result = match_probes(ref, test)
    assert [(p.ref.key, p.test.key, p.method) for p in result.pairs] == \
        [("/ln/Add_1_output_0", "/ln/LayerNormalization_output_0", "module-scope")]
    assert [u.key for u in result.unmatched] == ["/ln/ReduceMean_output_0"]


def test_an_unknown_dimension_is_accepted_only_where_the_known_ones_agree():
    ok, note = reconcile_shapes((2, 12, 64), (None, None, 64))
    assert ok and note == "sizes unknown before running: ref (2, 12, 64) vs test (None, None, 64)"
    assert not reconcile_shapes((2, 12, 64), (None, None, 32))[0]
    assert not reconcile_shapes((2, 12, 64), (None, 64))[0]


def test_a_linear_whose_bias_a_fused_node_adds_is_not_paired_with_the_bare_matmul():
    linear = torch_probe("enc.dense", 0)
    linear.meta["has_bias"] = True
    ln = torch_probe("enc.ln", 1)
    matmul = onnx_probe("/enc/dense/MatMul_output_0", 0, modules=["enc.dense"],
                        bias_folded_into="SkipLayerNormalization 'SkipLayerNorm_AddBias_0'")
    fused = onnx_probe("/enc/ln/LayerNormalization_output_0", 1, modules=["enc.ln"],
                       fused="SkipLayerNormalization 'SkipLayerNorm_AddBias_0'")
    result = match_probes([linear, ln], [matmul, fused])
    assert [(p.ref.key, p.test.key) for p in result.pairs] == [("enc.ln", fused.key)]
    assert result.pairs[0].notes and result.pairs[0].notes[0].startswith(
        "matched at a fused boundary: test SkipLayerNormalization 'SkipLayerNorm_AddBias_0'")
    reasons = {u.key: u.reason for u in result.unmatched}
    assert reasons["enc.dense"] == ("its bias was folded into SkipLayerNormalization 'SkipLayerNorm_AddBias_0': "
                                    "no value equals this module's output")


def test_a_biasless_linear_still_pairs_with_its_matmul():
    linear = torch_probe("enc.dense", 0)
    linear.meta["has_bias"] = False
    matmul = onnx_probe("/enc/dense/MatMul_output_0", 0, modules=["enc.dense", "enc"],
                        bias_folded_into="BiasGelu 'Gelu_AddBias_0'")
    outer = torch_probe("enc", 1)
    result = match_probes([linear, outer], [matmul])
    assert [(p.ref.key, p.test.key) for p in result.pairs] == [("enc.dense", matmul.key)]
    assert "enc" in {u.key for u in result.unmatched}  # the bare MatMul is not the outer module's output


def test_hugging_face_outputs_pair_by_name_never_a_pooler_with_a_sentence_embedding():
    """A BertModel (last_hidden_state, pooler_output) against a pipeline export (token_embeddings,
    sentence_embedding): the hidden states pair by name; the pooler never pairs by position with the
    mean-pooled embedding of the same shape (a false 160 % FAIL), and says why."""
    ref = [torch_probe("output.last_hidden_state", 0, shape=(2, 5, 8), output_index=0),
           torch_probe("output.pooler_output", 1, shape=(2, 8), output_index=1)]
    test = [onnx_probe("token_embeddings", 0, shape=(2, 5, 8), output_index=0, graph=True),
            onnx_probe("sentence_embedding", 1, shape=(2, 8), output_index=1, graph=True)]
    result = match_probes(ref, test)
    assert [(p.ref.key, p.test.key) for p in result.output_pairs] == [("output.last_hidden_state", "token_embeddings")]
    reasons = {u.key: u.reason for u in result.unmatched}
    assert "are other tensors" in reasons["output.pooler_output"]
