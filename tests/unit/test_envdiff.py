"""env diff: what differs between two environment manifests, those likely to change numerics first."""
from __future__ import annotations

import copy
import json

import pytest

from diffcore import DiffcoreError
from diffcore.cli import main
from diffcore.deploy.envdiff import ABSENT, env_diff, flatten, manifest_of, rank_of

BASE = {
    "schema": "diffcore.env/1", "diffcore": "0.1.0", "python": "3.11.7", "os": "Linux 6.1",
    "cpu": {"model": "AMD EPYC 7R13", "logical_cores": 16, "machine": "x86_64"},
    "packages": {"numpy": "2.1.0", "torch": "2.4.0+cu121", "onnxruntime-gpu": "1.18.0", "tabulate": "0.9.0"},
    "env_vars": {},
    "torch": {"version": "2.4.0+cu121", "cuda_build": "12.1", "cudnn": 90100, "cuda_available": True,
              "matmul_precision": "highest", "tf32_matmul": False, "tf32_cudnn": True, "threads": 16},
    "onnxruntime": {"version": "1.18.0", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                    "device": "GPU"},
    "gpu": {"available": True, "driver": "550.54.15", "cuda_driver": 12040,
            "devices": [{"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0", "memory_total_mib": 81920,
                         "clocks": {"sm": {"current_mhz": 1410, "max_mhz": 1410}, "memory": None}}]},
}


def other(**changes) -> dict:
    """BASE with dotted-path ``changes`` applied (``gpu.devices.0.name="H100"``)."""
    out = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return out


def keys(diff) -> list:
    return [row.key for row in diff.rows]


def test_identical_manifests_have_no_difference():
    diff = env_diff(BASE, copy.deepcopy(BASE))
    assert not diff and len(diff) == 0 and diff.summary() == "environments match"


def test_gpu_architecture_ranks_before_cuda_before_framework_before_tf32_before_cpu_before_the_rest():
    b = other(python="3.12.1", cpu__model="Intel Xeon 8480", torch__tf32_matmul=True, torch__version="2.5.1",
              packages__numpy="2.2.0", torch__cudnn=90300, gpu__driver="560.1",
              gpu__devices__0__name="NVIDIA H100 80GB HBM3", gpu__devices__0__compute_capability="9.0",
              gpu__devices__0__memory_total_mib=81559)
    diff = env_diff(BASE, b)
    assert keys(diff) == [
        "gpu.devices[0].compute_capability", "gpu.devices[0].name",       # GPU architecture
        "gpu.driver", "torch.cudnn",                                       # CUDA / cuDNN / driver
        "packages.numpy", "torch.version",                                 # framework versions
        "torch.tf32_matmul",                                               # precision settings
        "cpu.model",                                                       # CPU
        "gpu.devices[0].memory_total_mib", "python",                       # the rest
    ]
    assert [r.numerics for r in diff.rows] == [True] * 8 + [False] * 2


def test_a_gpu_that_is_only_on_one_side_is_a_gpu_architecture_difference():
    no_gpu = other(gpu={"available": False, "reason": "NVML unavailable"})
    diff = env_diff(BASE, no_gpu)
    arch = [r for r in diff.rows if r.category == "GPU architecture"]
    assert diff.rows[: len(arch)] == arch  # all of them first
    assert {"gpu.available", "gpu.devices[0].name", "gpu.devices[0].compute_capability"} <= {r.key for r in arch}
    gpu_rows = [r for r in diff.rows if r.key.startswith("gpu.devices")]
    assert all(r.b is ABSENT for r in gpu_rows if r.key != "gpu.devices[]")
    assert "(absent)" in diff.to_text()
    assert json.dumps(diff.to_dict())  # ABSENT serialises


def test_flatten_indexes_devices_and_joins_scalar_lists():
    flat = flatten(BASE)
    assert flat["gpu.devices[0].name"] == "NVIDIA A100-SXM4-80GB"
    assert flat["gpu.devices[]"] == 1
    assert flat["onnxruntime.providers"] == "CUDAExecutionProvider, CPUExecutionProvider"
    assert flat["gpu.devices[0].clocks.sm.max_mhz"] == 1410


def test_rank_of_known_keys():
    assert rank_of("gpu.devices[3].compute_capability")[1] == "GPU architecture"
    assert rank_of("torch.cuda_build")[1] == "CUDA / cuDNN / driver"
    assert rank_of("onnxruntime.version")[1] == "framework version"
    assert rank_of("torch.matmul_precision")[1] == "precision setting"
    assert rank_of("env_vars.NVIDIA_TF32_OVERRIDE")[1] == "precision setting"
    assert rank_of("cpu.model")[1] == "CPU"
    assert rank_of("torch.threads")[1] == "other"


def test_packages_torch_is_not_repeated_next_to_torch_version():
    diff = env_diff(BASE, other(torch__version="2.5.1", packages__torch="2.5.1"))
    assert keys(diff) == ["torch.version"]


def test_a_section_one_side_did_not_record_is_a_note_not_a_wall_of_differences():
    light = {k: v for k, v in BASE.items() if k not in ("torch", "onnxruntime", "gpu")}
    diff = env_diff(light, BASE)
    assert not diff
    assert any(n.startswith("torch: not recorded in A") for n in diff.notes)


def test_a_live_str_subclass_equals_its_json_text():
    class Version(str):  # torch.__version__ is a str subclass
        pass

    live = other(torch__version=Version("2.4.0+cu121"))
    assert not env_diff(live, BASE)


def test_manifest_of_finds_a_manifest_embedded_in_a_report_or_golden():
    assert manifest_of({"verdict": "pass", "environment": BASE}) is BASE
    with pytest.raises(DiffcoreError, match="no diffcore environment manifest"):
        manifest_of({"verdict": "pass"})


def test_summary_names_the_first_numerics_differences():
    diff = env_diff(BASE, other(torch__version="2.5.1", gpu__devices__0__name="NVIDIA H100"))
    assert diff.summary().startswith("2 environment key(s) differ, 2 numerics-relevant: gpu.devices[0].name")


def test_cli_env_diff_exits_1_on_differences_and_0_on_a_match(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(BASE))
    b.write_text(json.dumps({"verdict": "pass", "environment": other(gpu__devices__0__name="NVIDIA H100")}))
    assert main(["env", "diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "gpu.devices[0].name" in out and "NVIDIA H100" in out and "GPU architecture" in out
    assert main(["env", "diff", str(a), str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["differences"] == []


def test_cli_env_diff_of_a_file_without_a_manifest_is_one_error_line(tmp_path, capsys):
    a = tmp_path / "a.json"
    a.write_text("{\"x\": 1}")
    assert main(["env", "diff", str(a), str(a)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no diffcore environment manifest" in err[0]
