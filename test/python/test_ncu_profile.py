"""bench/ncu_profile.py's reading of Nsight Compute exports, on the profile
bench/NOTES.md step 24 took (rbfc's dot and RBF kernels and cuDNN's at
4x16x4096x128 on an H100, before the exponentials were interleaved)."""
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import ncu_profile  # noqa: E402

PROFILE = REPO / "bench" / "results" / "2026-12-06-h100-ncu-4x16x4096x128.tar.xz"


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ncu")
    with tarfile.open(PROFILE) as archive:
        archive.extractall(directory, filter="data")
    return directory


def test_opcode_drops_predicate_and_modifiers():
    assert ncu_profile.opcode("@!P2  MUFU.EX2 R16, R12") == "MUFU"
    assert ncu_profile.opcode("HGMMA.64x128x16.F32.BF16 R104, R200, gdesc[UR12].tnspB") == "HGMMA"
    assert ncu_profile.opcode("") == ""


def test_the_flash_kernel_not_its_prologue(profile_dir):
    kernels = ncu_profile.read_source(profile_dir / "source-rbf.csv")
    assert set(kernels) == {"rbf_fwd_key_terms", "rbf_fwd"}
    assert ncu_profile.hot_kernel(kernels) == "rbf_fwd"
    assert ncu_profile.read_detail(profile_dir / "details-rbf.txt", "Duration",
                                   "rbf_fwd") == 1039968
    assert ncu_profile.read_detail(profile_dir / "details-rbf.txt", "Duration",
                                   "rbf_fwd_key_terms") == 31808


def test_what_step_24_read(profile_dir):
    dot = ncu_profile.read_source(profile_dir / "source-softmax.csv")
    cudnn = ncu_profile.read_source(profile_dir / "source-cudnn.csv")
    dot_rows = dot["softmax_attention_fwd"]
    cudnn_rows = cudnn[ncu_profile.hot_kernel(cudnn)]
    # rbfc's 80 exponentials a tile in one run; cuDNN's at most two apart.
    assert ncu_profile.longest_run(dot_rows, "MUFU") == 77
    assert ncu_profile.longest_run(cudnn_rows, "MUFU") == 2
    total, by_opcode = ncu_profile.stall_profile(dot_rows)
    assert 100 * total["stall_wait"] / sum(total.values()) == pytest.approx(31.6, abs=0.05)
    assert by_opcode["MUFU"]["stall_wait"] == 14189
    active = ncu_profile.read_metric(profile_dir / "raw-cudnn.csv", ncu_profile.TENSOR_ACTIVE,
                                     ncu_profile.hot_kernel(cudnn))
    assert active == pytest.approx(75.98, abs=0.01)


def test_instructions_executed_by_opcode(profile_dir):
    # The same exponentials; cuDNN scales and shifts with FMUL and FADD
    # where rbfc has one FFMA (bench/NOTES.md step 26).
    dot = ncu_profile.read_source(profile_dir / "source-softmax.csv")["softmax_attention_fwd"]
    cudnn = ncu_profile.read_source(profile_dir / "source-cudnn.csv")
    dot_executed = ncu_profile.executed_by_opcode(dot)
    cudnn_executed = ncu_profile.executed_by_opcode(cudnn[ncu_profile.hot_kernel(cudnn)])
    assert dot_executed["MUFU"] == 34191872
    assert cudnn_executed["MUFU"] == 34639872
    assert dot_executed["FFMA"] > 30 * cudnn_executed["FFMA"]
    assert cudnn_executed["FMUL"] > 30 * dot_executed["FMUL"]
    assert sum(cudnn_executed.values()) / sum(dot_executed.values()) == pytest.approx(1.26, abs=0.01)


def test_summary_names_each_method(profile_dir):
    text = ncu_profile.summary(profile_dir, top=4)
    assert text.splitlines()[0].split() == ["cudnn", "rbf", "softmax"]
    assert "longest MUFU run" in text and "rbf: opcodes by samples" in text
    assert "instructions executed" in text


def test_summary_of_an_empty_folder_says_so(tmp_path):
    with pytest.raises(ValueError, match="no source-"):
        ncu_profile.summary(tmp_path)
