"""The instance-type table exaprov ships: it parses, covers what EKS supports, and is packaged."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import yaml

from exaprov import instance_types
from exaprov.instance_types import InstanceTypeInfo, describe, family_sizes, known_families, nearest

ROOT = Path(__file__).resolve().parent.parent

# Families EKS managed node groups run today (an AL2023 AMI type exists for their architecture
# and, for GPU/Neuron families, their accelerator). Sources, checked 2026-12-07: AWS "Amazon
# EC2 instance types" (general purpose, compute, memory, storage and accelerated computing
# specifications) and the EKS User Guide, "Managed node groups" and "Choose an optimal Amazon
# EC2 node instance type".
EKS_MANAGED_NODE_GROUP_FAMILIES = """
    m5 m5a m5ad m5d m5dn m5n m5zn m6a m6g m6gd m6i m6id m6idn m6in m7a m7g m7gd m7i m7i-flex
    m8a m8g m8gd m8i m8i-flex t3 t3a t4g
    c5 c5a c5ad c5d c5n c6a c6g c6gd c6gn c6i c6id c6in c7a c7g c7gd c7gn c7i c7i-flex
    c8a c8g c8gd c8gn c8i c8i-flex
    r5 r5a r5ad r5b r5d r5dn r5n r6a r6g r6gd r6i r6id r6idn r6in r7a r7g r7gd r7i r7iz
    r8a r8g r8gd r8i r8i-flex x2gd x2idn x2iedn x2iezn x8g z1d
    d3 d3en i3 i3en i4g i4i i7i i7ie i8g i8ge im4gn is4gen
    g4dn g5 g5g g6 g6e gr6 p4d p4de p5 p5e p5en p6-b200 inf1 inf2 trn1 trn1n trn2
    hpc6a hpc7a hpc7g
""".split()


def raw_table() -> dict:
    text = resources.files("exaprov.data").joinpath("instance_types.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def test_every_entry_has_the_documented_fields_and_types() -> None:
    table = raw_table()
    assert len(table) > 100
    for family, entry in table.items():
        assert isinstance(family, str) and "." not in family, family
        assert entry["architecture"] in ("x86_64", "arm64"), family
        if entry["accelerator"] is None:
            assert set(entry) == {"architecture", "accelerator", "sizes"}, family
            sizes = entry["sizes"]
            assert sizes and all(isinstance(s, str) for s in sizes), family
            assert len(set(sizes)) == len(sizes), family
        else:
            assert entry["accelerator"] in ("nvidia", "neuron"), family
            assert set(entry) == {"architecture", "accelerator", "accelerator_count"}, family
            counts = entry["accelerator_count"]
            assert counts and all(isinstance(s, str) for s in counts), family
            assert all(type(c) is int and c > 0 for c in counts.values()), family


def test_the_loader_reads_every_family_of_the_file() -> None:
    table = raw_table()
    assert known_families() == frozenset(table)
    for family, entry in table.items():
        assert family_sizes(family) == tuple(entry.get("sizes") or entry["accelerator_count"])


def test_every_family_eks_managed_node_groups_support_is_covered() -> None:
    assert not set(EKS_MANAGED_NODE_GROUP_FAMILIES) - known_families()


def test_the_header_gives_date_and_sources() -> None:
    text = resources.files("exaprov.data").joinpath("instance_types.yaml").read_text(encoding="utf-8")
    header = text.split("\n\n", 1)[0]
    assert "2026-12-07" in header and "Amazon EC2 instance types" in header


@pytest.mark.parametrize(
    ("name", "architecture", "accelerator", "count"),
    [
        ("m5.large", "x86_64", None, None),
        ("m6g.large", "arm64", None, None),
        ("t4g.micro", "arm64", None, None),
        ("m7i-flex.2xlarge", "x86_64", None, None),
        ("g4dn.xlarge", "x86_64", "nvidia", 1),
        ("g4dn.12xlarge", "x86_64", "nvidia", 4),
        ("g5.xlarge", "x86_64", "nvidia", 1),
        ("g5.12xlarge", "x86_64", "nvidia", 4),
        ("g5.48xlarge", "x86_64", "nvidia", 8),
        ("g5g.xlarge", "arm64", "nvidia", 1),
        ("g5g.16xlarge", "arm64", "nvidia", 2),
        ("p4d.24xlarge", "x86_64", "nvidia", 8),
        ("p6-b200.48xlarge", "x86_64", "nvidia", 8),
        ("inf1.6xlarge", "x86_64", "neuron", 4),
        ("inf2.xlarge", "x86_64", "neuron", 1),
        ("inf2.48xlarge", "x86_64", "neuron", 12),
        ("trn1.32xlarge", "x86_64", "neuron", 16),
        ("trn2.48xlarge", "x86_64", "neuron", 16),
        # AMD GPUs: no EKS-optimized AMI drives them, so only a CPU node to exaprov.
        ("g4ad.xlarge", "x86_64", None, None),
    ],
)
def test_describe(name: str, architecture: str, accelerator: str | None, count: int | None) -> None:
    family, size = name.split(".")
    assert describe(name) == InstanceTypeInfo(name, family, size, architecture, accelerator, count)


@pytest.mark.parametrize(
    "name",
    ["foo.bar", "foo", "", ".", "m5", "m5.", "m5.larg", "M5.large", "g5.large", "m5.large.x", "a1.large"],
)
def test_describe_refuses_what_is_not_a_known_type(name: str) -> None:
    assert describe(name) is None


@pytest.mark.parametrize(
    ("typo", "first"),
    [
        ("m5.larg", "m5.large"),
        ("M5.LARGE", "m5.large"),
        ("m55.large", "m5.large"),
        ("m7iflex.large", "m7i-flex.large"),
        ("g5g.large", "g5g.xlarge"),
        ("inf3.xlarge", "inf2.xlarge"),
        ("m5", "m5.large"),
    ],
)
def test_nearest_suggests_known_types(typo: str, first: str) -> None:
    found = nearest(typo)
    assert found[0] == first
    assert 1 <= len(found) <= 3 and all(describe(t) for t in found)


def test_nearest_has_nothing_for_a_name_unlike_any_family() -> None:
    assert nearest("foo.bar") == []
    assert len(nearest("m5.larg", n=5)) == 5


def test_a_malformed_table_is_refused_with_the_family_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "instance_types.yaml").write_text(
        "m5: {architecture: x86_64, accelerator: null, sizes: [large]}\n"
        "g9: {architecture: x86_64, accelerator: nvidia, accelerator_count: {xlarge: 0}}\n"
    )
    monkeypatch.setattr(instance_types, "resources", types.SimpleNamespace(files=lambda _: tmp_path))
    instance_types._table.cache_clear()
    try:
        with pytest.raises(ValueError, match="family 'g9'.*positive integers"):
            known_families()
    finally:
        monkeypatch.undo()
        instance_types._table.cache_clear()


def test_the_table_is_in_the_built_wheel(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "exaprov", source / "exaprov", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "out"), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "out").glob("exaprov-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = archive.read("exaprov/data/instance_types.yaml")
    assert packed == (ROOT / "exaprov/data/instance_types.yaml").read_bytes()
