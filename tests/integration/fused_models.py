"""Models for the fused-graph and run-time-shape tests: a small BERT (transformers) exported with the
TorchScript exporter and rewritten by ONNX Runtime's transformer optimizer or saved by an ORT session at
ORT_ENABLE_ALL, and a convolution whose Pad amount is computed from the input's length at run time."""
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HIDDEN, HEADS, LAYERS, SEQ, VOCAB = 32, 2, 2, 8, 100
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Bert(nn.Module):
    """transformers' BertModel (post-norm, GELU), returning the last hidden state."""

    def __init__(self, seed: int = 0):
        super().__init__()
        from transformers import BertConfig, BertModel

        torch.manual_seed(seed)
        config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=2 * HIDDEN, max_position_embeddings=32,
                            hidden_act="gelu", attn_implementation="eager")
        self.bert = BertModel(config, add_pooling_layer=False).eval()
        _like_trained(self.bert)

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


def _like_trained(model: nn.Module) -> None:
    """Distinct LayerNorm gains and non-zero biases, as in a trained model: fresh ones are all 1 / all 0,
    and the exporter then stores one initializer for all of them."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.05)
            elif "LayerNorm" in name:
                param.normal_(1.0, 0.1)


def bert_inputs(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((2, SEQ), np.int64)
    mask[1, -2:] = 0
    return {"input_ids": rng.integers(0, VOCAB, (2, SEQ)).astype(np.int64), "attention_mask": mask,
            "token_type_ids": np.zeros((2, SEQ), np.int64)}


def export_bert(model: nn.Module, path) -> str:
    """TorchScript exporter, opset 17, batch and sequence dynamic (as users export BERT)."""
    args = tuple(torch.from_numpy(v) for v in bert_inputs().values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, input_names=list(BERT_INPUTS),
                          output_names=["y"], dynamic_axes={k: {0: "batch", 1: "seq"} for k in BERT_INPUTS})
    return str(path)


def ort_optimize(path, out) -> str:
    """onnxruntime.transformers' optimizer for BERT (writes com.microsoft fused ops)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN)
    optimized.save_model_to_file(str(out))
    return str(out)


def ort_save_optimized(path, out) -> str:
    """The graph an ORT session optimizes at ORT_ENABLE_ALL, saved through optimized_model_filepath."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return str(out)


class RunTimePad(nn.Module):
    """Pads the signal to a multiple of 8 samples (the amount computed from its length), then convolves."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv1d(1, 8, kernel_size=8, stride=4)
        self.act = nn.ReLU()
        self.proj = nn.Conv1d(8, 4, kernel_size=3, padding=1)

    def forward(self, signal):
        pad = (8 - signal.shape[-1] % 8) % 8
        x = F.pad(signal.unsqueeze(1), (0, pad), mode="reflect")
        return self.proj(self.act(self.conv(x))).mean(dim=-1)


def pad_inputs(length: int = 61, seed: int = 2) -> dict:
    return {"signal": np.random.default_rng(seed).standard_normal((2, length)).astype(np.float32)}


def export_pad(model: nn.Module, path) -> str:
    args = (torch.from_numpy(pad_inputs(45)["signal"]),)  # another length: the pad amount is not baked in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, input_names=["signal"],
                          output_names=["y"], dynamic_axes={"signal": {0: "batch", 1: "samples"}})
    return str(path)
