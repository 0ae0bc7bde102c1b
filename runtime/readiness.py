"""Device readiness of ONNX graphs: NNAPI partitions (ORT's usability checker) and XNNPACK coverage.

Analysis only (needs the ``onnx`` package); nothing here is needed to run a bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from edgeclip.bundle import load_bundle
from edgeclip.errors import EdgeclipError
from runtime.ort_tools import import_ort_tool
from runtime.partitions import name_nodes, split_stats
from runtime.xnnpack_rules import xnnpack_coverage


class ReadinessError(EdgeclipError):
    """A graph or bundle could not be analysed (missing file, unreadable model, onnx not installed)."""


def _load_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ReadinessError("device-readiness analysis needs the 'onnx' package: pip install onnx") from exc
    return onnx


def optimized_with_shapes(onnx_path: str | Path, optimize: bool = True) -> Any:
    """Load a graph as ORT sees it before partitioning (BASIC-level optimized) with shapes inferred."""
    _load_onnx()
    path = Path(onnx_path)
    if not path.is_file():
        raise ReadinessError(f"ONNX graph not found: {path}")
    helpers = import_ort_tool("onnx_model_utils")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = path
            if optimize:
                source = Path(tmp) / path.name
                helpers.optimize_model(path, source)
            return helpers.ModelProtoWithShapeInfo(source).model_with_shape_info
    except ReadinessError:
        raise
    except Exception as exc:
        raise ReadinessError(f"cannot analyse {path.name}: {exc}") from exc


def nnapi_report(onnx_path: str | Path, optimize: bool = True) -> dict[str, Any]:
    """NNAPI partitions, covered nodes and unsupported op counts, from ORT's mobile usability checker.

    The graph is first optimized at BASIC level, as ORT does before it partitions a graph between
    execution providers; ``optimize=False`` analyses the file as written.
    """
    model = optimized_with_shapes(onnx_path, optimize)
    name_nodes(model)
    checker = import_ort_tool("mobile_helpers.usability_checker")
    info = checker.check_nnapi_partitions(model, require_fixed_input_sizes=True)
    covered = {node.name for group in info.supported_groups for node in group}
    stats = split_stats(model, covered, layout_sensitive=False)
    ops = info.supported_ops_checker
    unsupported = Counter(
        node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        for node in model.graph.node
        if not ops.is_op_supported(node)
    )
    return {
        "partitions": int(info.num_partitions),
        "nodes_covered": int(info.num_supported_nodes),
        "handovers": stats["handovers"],
        "macs_total": stats["macs_total"],
        "macs_on_provider": stats["macs_on_provider"],
        "mac_share": stats["mac_share"],
        "nodes_total": int(info.num_nodes),
        "unsupported_ops": dict(sorted(unsupported.items())),
        "partition_sizes": [len(group) for group in info.supported_groups],
        "dynamic_shape_nodes": int(info.nodes_unsupported_due_to_dynamic_input),
        "caveats": ops.get_caveats(),
        "suitability": info.suitability().name,
    }


def xnnpack_report(onnx_path: str | Path) -> dict[str, Any]:
    """XNNPACK node coverage of one graph, judged on the same BASIC-optimized graph ORT partitions."""
    return xnnpack_coverage(optimized_with_shapes(onnx_path))


NNAPI_SUMMARY = ("partitions", "nodes_covered", "nodes_total", "mac_share", "handovers", "unsupported_ops")
XNNPACK_SUMMARY = ("partitions", "nodes_taken", "nodes_total", "mac_share", "handovers", "layout_changes")


def tower_summary(onnx_path: str | Path) -> dict[str, Any]:
    """The manifest's readiness block for one graph: per provider, partitions, node and multiply-accumulate share."""
    nnapi, xnnpack = nnapi_report(onnx_path), xnnpack_report(onnx_path)
    return {"nnapi": {k: nnapi[k] for k in NNAPI_SUMMARY}, "xnnpack": {k: xnnpack[k] for k in XNNPACK_SUMMARY}}


def _advice(tower: dict[str, Any], nnapi: dict[str, Any], xnnpack: dict[str, Any], target: str | None) -> list[str]:
    """What to change in the export/quantize recipe so more of this graph runs on NNAPI / XNNPACK."""
    tips = []
    if nnapi["dynamic_shape_nodes"]:
        tips.append("NNAPI needs static shapes: export with `--batch 1` (fixed-batch graph; the runtime pads/splits)")
    ops = nnapi["unsupported_ops"]
    if "Erf" in ops:
        tips.append(f"{ops['Erf']} Erf nodes (exact GELU) split NNAPI partitions: export with `--gelu tanh`")
    if "LayerNormalization" in ops:
        tips.append("LayerNormalization is not an NNAPI op: export at opset 16 so it is decomposed into supported ops")
    other = sorted(set(ops) - {"Erf", "LayerNormalization"})
    if other:
        tips.append("other ops NNAPI lacks (run on CPU): " + ", ".join(f"{op} x{ops[op]}" for op in other))
    precision = tower.get("precision", "fp32")
    if precision == "int8" and target != "nnapi":
        tips.append("for NNAPI quantize with `--target nnapi` (U8 activations, symmetric per-channel S8 weights)")
    wrong_qdq = any("QDQ conv types" in reason for reason in xnnpack["rejected"])
    if wrong_qdq or (precision == "int8" and target != "xnnpack"):
        tips.append("for XNNPACK INT8 quantize with `--target xnnpack` (S8 activations, symmetric S8 weights)")
    if any(r.startswith(("MatMul: A", "Gemm: A")) for r in xnnpack["rejected"]):
        tips.append("XNNPACK takes MatMul/Gemm only with a static rank<=2 A: `python -m quantize.int8 --target xnnpack` "
                    "exports batch 1 and rewrites linear layers over [B, T, C] to 2-D Gemm/MatMul")
    if not (tower.get("alternates") or {}).get("ort"):
        tips.append("for minimal ORT builds convert with `python -m runtime.ortformat BUNDLE`")
    return tips


def readiness_report(bundle_dir: str | Path) -> dict[str, Any]:
    """Per tower of a bundle: NNAPI partitions/coverage, XNNPACK node coverage, unsupported ops and advice."""
    import onnxruntime

    bundle = load_bundle(bundle_dir, verify=True)
    quant = bundle.manifest.get("quantization") or {}
    target = quant.get("target") if isinstance(quant, dict) else None
    towers = {}
    for name, tower in bundle.towers.items():
        path = bundle.tower_path(name)
        nnapi = nnapi_report(path)
        xnnpack = xnnpack_report(path)
        towers[name] = {
            "file": tower["file"],
            "precision": tower.get("precision", "fp32"),
            "batch": tower.get("batch", "dynamic"),
            "gelu": tower.get("gelu"),
            "nnapi": nnapi,
            "xnnpack": xnnpack,
            "advice": _advice(tower, nnapi, xnnpack, target),
        }
    return {
        "bundle": str(bundle.root),
        "model_id": bundle.model_id,
        "quantization_target": target,
        "onnxruntime": onnxruntime.__version__,
        "towers": towers,
    }


def _pct(part: int, total: int) -> str:
    return f"{100.0 * part / total:.1f}%" if total else "n/a"


def _share(provider: dict[str, Any]) -> str:
    share = provider.get("mac_share")
    return "n/a" if share is None else f"{100.0 * share:.1f}%"


def format_readiness(report: dict[str, Any]) -> str:
    """Human-readable text of a readiness_report."""
    lines = [
        f"bundle {report['bundle']} ({report['model_id']}, quantization target: {report['quantization_target'] or 'none'}), "
        f"analysed with onnxruntime {report['onnxruntime']}"
    ]
    for name, t in report["towers"].items():
        n, x = t["nnapi"], t["xnnpack"]
        lines.append(f"\n[{name}] {t['file']}: {t['precision']}, batch {t['batch']}, gelu {t['gelu'] or '?'}")
        lines.append(
            f"  NNAPI:   {n['partitions']} partition(s) covering {n['nodes_covered']}/{n['nodes_total']} nodes "
            f"({_pct(n['nodes_covered'], n['nodes_total'])}); sizes {n['partition_sizes'][:8]}"
            f"{' ...' if len(n['partition_sizes']) > 8 else ''}; verdict {n['suitability']}"
        )
        lines.append(f"           {_share(n)} of multiply-accumulates; {n['handovers']} hand-over(s) to/from the CPU EP")
        if n["unsupported_ops"]:
            lines.append("           unsupported: " + ", ".join(f"{k} x{v}" for k, v in n["unsupported_ops"].items()))
        if n["dynamic_shape_nodes"]:
            lines.append(f"           {n['dynamic_shape_nodes']} nodes blocked by dynamic shapes")
        lines.append(
            f"  XNNPACK: {x['nodes_taken']}/{x['nodes_total']} nodes ({_pct(x['nodes_taken'], x['nodes_total'])}) "
            f"taken: " + (", ".join(f"{k} x{v}" for k, v in x["taken_ops"].items()) or "none")
        )
        lines.append(
            f"           {x['partitions']} partition(s), {_share(x)} of multiply-accumulates; "
            f"{x['handovers']} hand-over(s) to/from the CPU EP, {x['layout_changes']} with an NHWC/NCHW layout change"
        )
        for reason, count in list(x["rejected"].items())[:6]:
            lines.append(f"           not taken: {reason} (x{count})")
        for tip in t["advice"]:
            lines.append(f"  -> {tip}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m runtime.readiness BUNDLE [--json]``: print the device-readiness report."""
    parser = argparse.ArgumentParser(
        prog="python -m runtime.readiness",
        description="Report how much of a bundle's graphs NNAPI (ORT's usability checker) and XNNPACK "
        "(the EP's node rules) would run, and what to change in the export/quantize recipe.",
    )
    parser.add_argument("bundle", type=Path, help="bundle directory (with manifest.json)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = readiness_report(args.bundle)
    except EdgeclipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_readiness(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
