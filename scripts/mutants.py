"""Mutation check of the methods' and metrics' cores (`make mutants`; not part of `make test`).

Each mutant is one small, named edit of one line (a sign, an index, a box, a layer, an off-by-one)
that a faithful test suite must notice. The repository is copied once into a temporary directory;
each mutant is applied to that copy, the tests listed for it run there (`pytest -x -q`, niced, in a
fork of this process that has torch and transformers imported already but none of the project's
modules), and the file is restored before the next. The worktree itself is never edited.
The copy lives at a fixed place (`.cache/mutants/repo`, git-ignored, rebuilt every run) with its own
`TORCH_EXTENSIONS_DIR` (`.cache/mutants/torch_extensions`): the VASparse kernel's build is keyed by its
source path, so a fixed path builds it once, and the shared extension cache is never touched.

    python scripts/mutants.py              # every mutant (run it with the project's venv); exit 1 if any survives
    python scripts/mutants.py -k halc      # the mutants whose name contains "halc"
    python scripts/mutants.py --list       # names, files and test selections only

A mutant is *killed* when its tests fail, *survived* when they pass. Before the mutants run, the
union of their test selections runs once on the unmutated copy: a selection that fails there
would kill every mutant for nothing, so the check stops instead. A mutant whose original snippet
is not found exactly once in its file is reported as *stale* (the code moved; update the list) and
also fails the check.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "mutants"
# What the temporary copy leaves out: VCS data, environments, caches and run outputs.
IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "__pycache__", "*.egg-info", "runs", "multirun", "outputs")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # file, relative to the repository root
    old: str  # exact snippet, found exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest selections (files or node ids) that must catch it


T_OPS = "tests/methods/test_vasparse_ops.py"
T_VAS = "tests/methods/test_vasparse.py"
T_VEFF = "tests/methods/test_vasparse_effects.py"
T_FUSED = "tests/methods/test_vasparse_fused.py"
T_VCD = "tests/methods/test_vcd.py"
T_FASTV = "tests/methods/test_fastv.py"
T_TOPK = "tests/methods/test_topk.py"
T_HU = "tests/methods/test_halc_units.py"
T_HS = "tests/methods/test_halc_search.py"
T_HF = "tests/methods/test_halc_fidelity.py"
T_HM = "tests/methods/test_halc_models.py"
T_CHAIR = "tests/metrics/test_chair.py"
T_POPE = "tests/metrics/test_pope.py"
T_OPOPE = "tests/metrics/test_opope.py"
T_POPEGEN = "tests/data/test_pope_gen.py"
T_NEXT = "tests/models/test_family_llava_next.py"
T_BLIP = "tests/models/test_family_instructblip.py"
T_QWEN = "tests/models/test_family_qwen2_5_vl.py"

VCD_Z = (f"{T_VCD}::test_contrast_branch_has_its_own_cache_and_sees_the_noised_image",)  # z vs fresh forwards
FASTV_RANK = (f"{T_FASTV}::test_ranking_equals_eager_output_attentions",)
FUSED_CALL = (f"{T_FUSED}::test_kernel_call_equals_the_reference_path",)  # the C++ kernel vs the torch path

M = Mutant
MUTANTS: tuple[Mutant, ...] = (
    # ---- VASparse: VATS selection (eq. (4)–(5)) ------------------------------------------------
    M("vats_current_key_is_a_candidate", "methods/vasparse_select.py",
      "return torch.arange(min(prompt_len, last), last)", "return torch.arange(min(prompt_len, last), last + 1)",
      (T_OPS,)),
    M("vats_keep_count_floor", "methods/vasparse_select.py",
      "math.ceil(sparsity * n - 1e-9)", "math.floor(sparsity * n)", (T_OPS,)),
    M("vats_drops_the_largest_delta", "methods/vasparse_select.py",
      "order = torch.sort(delta, dim=-1, descending=True, stable=True).indices",
      "order = torch.sort(delta, dim=-1, descending=False, stable=True).indices", (T_OPS,)),
    M("vats_relevance_abs_not_square", "methods/vasparse_select.py",
      "a = s_cand.float().square()", "a = s_cand.float().abs()", (T_OPS,)),
    M("vats_lambda_ignored", "methods/vasparse_select.py", "return lam * b", "return b", (T_OPS,)),
    # ---- VASparse: saliency P --------------------------------------------------------------------
    M("saliency_includes_the_current_token", "methods/vasparse_select.py",
      "r[:, : n_keys - 1]", "r[:, :n_keys]", (T_OPS,)),
    M("saliency_prefill_sum_over_heads", "methods/vasparse_attention.py",
      "st.r = p[..., img].sum(dim=-1).mean(dim=1)", "st.r = p[..., img].sum(dim=-1).sum(dim=1)",
      (f"{T_VAS}::test_saliency_history_and_sap_accumulators_match_eager_attentions",)),
    M("saliency_image_span_off_by_one", "methods/vasparse_attention.py",
      "img = slice(lay.image_start, lay.image_start + lay.n_image)",
      "img = slice(lay.image_start + 1, lay.image_start + lay.n_image + 1)",
      (f"{T_VAS}::test_saliency_history_and_sap_accumulators_match_eager_attentions",)),
    M("saliency_decode_row_ignores_redistribution", "methods/vasparse_attention.py",
      "r_new = a_hat[..., img].sum(dim=-1).mean(dim=1)", "r_new = real[..., img].sum(dim=-1).mean(dim=1)", FUSED_CALL),
    M("dpc_density_without_square", "methods/vasparse_cluster.py",
      "rho = torch.exp(-nearest.square().mean(dim=-1))", "rho = torch.exp(-nearest.mean(dim=-1))", (T_OPS,)),
    M("dpc_separation_max_not_min", "methods/vasparse_cluster.py",
      "eta = dist.masked_fill(~above, float(\"inf\")).min(dim=-1).values",
      "eta = dist.masked_fill(~above, float(\"-inf\")).max(dim=-1).values", (T_OPS,)),
    M("dpc_cluster_count_bankers_rounding", "methods/vasparse_cluster.py",
      "return max(1, round_half_up(cluster_ratio * m))", "return max(1, round(cluster_ratio * m))", (T_OPS,)),
    M("merge_uniform_weights", "methods/vasparse_cluster.py",
      "weights = torch.where(w_sum > 0, delta / w_sum.clamp_min(1e-30), 1.0 / w_size)",
      "weights = torch.where(w_sum > 0, 1.0 / w_size, 1.0 / w_size)", (T_OPS,)),
    M("redistribution_without_member_weights", "methods/vasparse_cluster.py",
      "share = torch.gather(virtual_probs, -1, merge.assign) * merge.weights",
      "share = torch.gather(virtual_probs, -1, merge.assign)", (T_OPS,)),
    # ---- VASparse: SVCD (eq. (6)) ----------------------------------------------------------------
    M("svcd_mask_on_text_positions", "methods/vasparse_svcd.py",
      "return (pick + inputs.image_start).sort().values", "return pick.sort().values", (f"{T_VAS}::test_svcd_mask_is_per_sample",)),
    M("svcd_mask_ignored_by_the_branch", "methods/vasparse_svcd.py",
      "self.keep = kept_positions(inputs.length, masked).to(adapter.device)",
      "self.keep = torch.arange(inputs.length).to(adapter.device)", (f"{T_VEFF}::test_svcd_contrast_is_the_equations_and_depends_on_the_image_mask",)),
    M("svcd_branch_positions_renumbered", "methods/vasparse_svcd.py",
      "positions = self.adapter.rope_position_ids(self.inputs, self.keep[None])",
      "positions = self.adapter.rope_position_ids(self.inputs, torch.arange(self.keep.numel())[None])",
      (f"{T_VAS}::test_svcd_branch_cached_equals_recompute_and_physical_equals_masking",)),
    M("svcd_stop_layer_off_by_one", "methods/vasparse.py",
      "self.adapter, self.inputs, self.image_mask, stop_layer=svcd.stop_layer, final_norm=svcd.final_norm",
      "self.adapter, self.inputs, self.image_mask, stop_layer=svcd.stop_layer - 1, final_norm=svcd.final_norm", (f"{T_VAS}::test_svcd_full_depth_unmasked_branch_equals_the_main_logits",)),
    M("svcd_embedding_prior_norm_inverted", "methods/vasparse_svcd.py",
      "            if self.final_norm:\n                h = self.adapter.final_norm(h)\n            row",
      "            if not self.final_norm:\n                h = self.adapter.final_norm(h)\n            row",
      (f"{T_VAS}::test_svcd_stop_layer_0_is_the_embedding_prior_whatever_the_mask",)),
    M("svcd_alpha_ignored", "methods/vasparse.py",
      "return contrast_scores(l_main, l_contrast, self.method.alpha, svcd.plausibility)",
      "return contrast_scores(l_main, l_contrast, 0.1, svcd.plausibility)", (f"{T_VEFF}::test_svcd_contrast_is_the_equations_and_depends_on_the_image_mask",)),
    M("sap_penalty_sign", "methods/vasparse_sap.py",
      "return s * (1.0 + beta - beta * w)", "return s * (1.0 - beta + beta * w)", (T_OPS,)),
    M("sap_weights_of_negated_attention", "methods/vasparse_sap.py",
      "return torch.softmax(c.float(), dim=-1)", "return torch.softmax(-c.float(), dim=-1)", (T_OPS,)),
    M("sap_prefill_row_sums", "methods/vasparse_sap.py",
      "return probs.float().sum(dim=-2)", "return probs.float().sum(dim=-1)",
      (f"{T_VAS}::test_saliency_history_and_sap_accumulators_match_eager_attentions",)),
    M("sap_decode_rows_not_accumulated", "methods/vasparse_attention.py",
      "st.c[call.layer].add_(a_hat)  # grown", "st.c[call.layer].mul_(1.0)  # grown", FUSED_CALL),
    M("vcd_noise_step_off_by_one", "methods/vcd.py",
      "return float(torch.sqrt(alpha_bar[noise_step])), float(torch.sqrt(1 - alpha_bar[noise_step]))",
      "return float(torch.sqrt(alpha_bar[noise_step - 1])), float(torch.sqrt(1 - alpha_bar[noise_step - 1]))", (f"{T_VCD}::test_noise_coefficients",)),
    M("vcd_noise_clamped", "methods/vcd.py",
      "x = pixel_values.float()", "x = pixel_values.float().clamp(-1, 1)", (f"{T_VCD}::test_noise_is_the_ddpm_forward_step_without_clamping",)),
    M("vcd_contrast_sign", "vh_bench/decoding/contrast.py",
      "z = l if alpha == 0 else (1.0 + alpha) * l - alpha * l_contrast.float()",
      "z = l if alpha == 0 else (1.0 + alpha) * l + alpha * l_contrast.float()", VCD_Z),
    M("vcd_alpha_beta_swapped", "methods/vcd.py",
      "return contrast_scores(logits, logits_cd, self.method.alpha, self.method.beta)",
      "return contrast_scores(logits, logits_cd, self.method.beta, self.method.alpha)", VCD_Z),
    M("vcd_cutoff_on_the_contrast_scores", "vh_bench/decoding/contrast.py",
      "return z.masked_fill(l < threshold, float(\"-inf\"))", "return z.masked_fill(z < threshold, float(\"-inf\"))", VCD_Z),
    M("vcd_batched_halves_swapped", "methods/vcd.py",
      "return z[: self.rows], z[self.rows :]", "return z[self.rows :], z[: self.rows]", VCD_Z),
    M("vcd_beam_reorder_contrast_rows", "methods/vcd.py",
      "self.pair.reorder(torch.cat([beam_idx, beam_idx + self.rows]))",
      "self.pair.reorder(torch.cat([beam_idx, beam_idx]))", (f"{T_VCD}::test_beam_reorder_matches_a_single_row_replay",)),
    M("fastv_ranking_ascending", "vh_bench/decoding/pruning.py",
      "order = torch.sort(scores, descending=True, stable=True).indices",
      "order = torch.sort(scores, descending=False, stable=True).indices", FASTV_RANK),
    M("fastv_ranking_image_span_off_by_one", "vh_bench/decoding/pruning.py",
      "scores = last_row_probs.float().mean(dim=0)[image_start : image_start + n_image]",
      "scores = last_row_probs.float().mean(dim=0)[image_start + 1 : image_start + n_image + 1]", FASTV_RANK),
    M("fastv_ranks_by_the_first_query", "vh_bench/decoding/pruning.py",
      "q = call.query[:1, :, -1:, :]", "q = call.query[:1, :, :1, :]", FASTV_RANK),
    M("fastv_ranks_at_layer_k", "methods/fastv.py", "rank_layer=self.k - 1,", "rank_layer=self.k,", FASTV_RANK),
    M("fastv_keeps_ratio_not_one_minus", "methods/fastv.py",
      "return round_half_up((1.0 - float(self.ratio)) * n_image)", "return round_half_up(float(self.ratio) * n_image)", (f"{T_FASTV}::test_counts_round_half_up",)),
    M("pruning_starts_one_layer_late", "vh_bench/decoding/pruning.py",
      "return self.rank_layer + 1", "return self.rank_layer + 2", (f"{T_FASTV}::test_cache_lengths_follow_the_pruning",)),
    M("topk_keeps_one_minus_ratio", "methods/topk.py",
      "return round_half_up(float(self.keep_ratio) * n_image)",
      "return round_half_up((1.0 - float(self.keep_ratio)) * n_image)", (f"{T_TOPK}::test_counts_round_half_up",)),
    M("topk_ranks_one_layer_late", "methods/topk.py",
      "adapter, inputs, rank_layer=self.layer, n_keep",
      "adapter, inputs, rank_layer=self.layer + 1, n_keep", (f"{T_TOPK}::test_equals_fastv_at_k_layer_plus_1",)),
    M("halc_views_from_the_default_box", "methods/halc.py",
      "boxes = fov_boxes(g.box, m.num_fov, m.expand_ratio)",
      "boxes = fov_boxes(m.default_box, m.num_fov, m.expand_ratio)", (T_HF,)),
    M("halc_view_logits_after_v_plus_w", "methods/halc.py",
      "logits = self.views.logits(boxes, b.V)", "logits = self.views.logits(boxes, b.V + b.W)", (T_HF,)),
    M("halc_expand_full_width_per_side", "methods/halc_fov.py",
      "return (max(0.0, x0 - w * f / 2), max(0.0, y0 - h * f / 2), min(1.0, x1 + w * f / 2), min(1.0, y1 + h * f / 2))",
      "return (max(0.0, x0 - w * f), max(0.0, y0 - h * f), min(1.0, x1 + w * f), min(1.0, y1 + h * f))",
      (T_HU,)),
    M("halc_views_expand_linearly", "methods/halc_fov.py",
      "views.append(expand_box(views[-1], expand_ratio))", "views.append(expand_box(b, expand_ratio * (len(views) - 1)))",
      (T_HU,)),
    M("halc_pair_ranking_ascending", "methods/halc_fov.py",
      "order = sorted(range(len(pairs)), key=lambda k: (-div[k], pairs[k]))",
      "order = sorted(range(len(pairs)), key=lambda k: (div[k], pairs[k]))", (T_HU,)),
    M("halc_divergence_textbook_jsd", "methods/halc_fov.py",
      "        kl_i = (m_log_m - mix * lp_i).sum(dim=-1)",
      "        kl_i = (p_i * (lp_i - log_mix)).sum(dim=-1)", (T_HU,)),
    M("halc_candidate_order_within_a_pair", "methods/halc_fov.py",
      "a = [v for i, j in pairs for v in (j, i)]", "a = [v for i, j in pairs for v in (i, j)]", (T_HU,)),
    M("halc_contrast_weight_sign", "methods/halc_fov.py",
      "z = view_logits[a].float() - weight * view_logits[b].float()",
      "z = view_logits[a].float() + weight * view_logits[b].float()", (T_HU,)),
    M("halc_crop_box_rounding", "methods/halc_fov.py",
      "a = min(max(math.floor(lo * size + 0.5), 0), size - 1)", "a = min(max(math.floor(lo * size), 0), size - 1)",
      (T_HU,)),
    M("dola_picks_the_closest_layer", "methods/halc_dola.py",
      "pick = int(torch.argmax(_code_jsd(lp_m, lp_j)).item())", "pick = int(torch.argmin(_code_jsd(lp_m, lp_j)).item())",
      (T_HU,)),
    M("dola_odd_premature_layers", "methods/halc_dola.py",
      "return list(range(0, n_layers - 1, 2))", "return list(range(1, n_layers, 2))", (T_HU,)),
    M("dola_premature_normed", "methods/halc_dola.py",
      "if self.norm_premature and j != last:", "if j != last:", (T_HF,)),
    # (Not a mutant: dropping the −1000 fill of `base` where `final` is −inf; −inf − base is −inf
    # either way, so that edit changes no score and no test can, or should, notice it.)
    M("dola_without_relative_top", "methods/halc_dola.py",
      "final = plausibility_cutoff(lp_m, lp_m, relative_top)  #", "final = lp_m  #", (T_HU,)),
    M("halc_grounding_largest_box", "methods/halc_grounding.py",
      "boxes[areas.index(min(areas))]", "boxes[areas.index(max(areas))]", (T_HU,)),
    M("halc_grounding_keeps_tiny_boxes", "methods/halc_grounding.py",
      "if area(b) < min_area:", "if area(b) < 0:", (T_HU,)),
    M("halc_entity_keeps_plural_s", "methods/halc_words.py",
      "    if entity.endswith(\"s\"):\n        entity = entity[:-1]", "    if entity.endswith(\"ss\"):\n        entity = entity[:-1]",
      (T_HU,)),
    M("halc_skip_over_add", "methods/halc_words.py",
      "    if word in add:\n        pos = \"ADD\"\n    elif \"", "    if word in add and word not in exempt:\n        pos = \"ADD\"\n    elif \"",
      (T_HU,)),
    M("halc_delete_count_off_by_one", "methods/halc.py",
      "and len(b.V) + 1 >= m.min_committed_before_delete", "and len(b.V) >= m.min_committed_before_delete",
      (T_HF,)),
    M("halc_delete_span_start", "methods/halc.py",
      "outcome, d0 = \"delete\", (w_start if self.starts[c] else word_start)",
      "outcome, d0 = \"delete\", w_start", (f"{T_HS}::test_replace_then_delete_keep_the_cache_in_step",)),
    M("halc_selection_picks_the_worst", "methods/halc.py",
      "order = sorted(range(len(entries)), key=lambda k: -by_text[entries[k][0]])",
      "order = sorted(range(len(entries)), key=lambda k: by_text[entries[k][0]])", (f"{T_HS}::test_beam_selection_distinct_texts_and_duplicates",)),
    M("halc_itm_wrong_class", "methods/halc_scorer.py",
      "return torch.softmax(itm, dim=-1)[:, 1].cpu().tolist()", "return torch.softmax(itm, dim=-1)[:, 0].cpu().tolist()",
      (f"{T_HM}::test_blip_scores_equal_the_retrieval_models_forward",)),
    # ---- model families (issue 17): what each adapter carries -------------------------------------
    M("next_image_sizes_not_broadcast", "vh_bench/models/llava_next.py",
      "sizes = sizes.expand(n, -1)", "sizes = sizes", (T_NEXT,)),
    M("views_not_resized_to_the_sample", "vh_bench/models/adapter.py",
      "return [im if im.size == size else im.resize(size, Image.BICUBIC) for im in images]",
      "return list(images)", (T_NEXT, T_QWEN)),
    M("blip_qformer_text_not_broadcast", "vh_bench/models/instructblip.py",
      "value = value.expand(n, -1)", "value = value", (T_BLIP,)),
    M("qwen_decode_positions_without_offset", "vh_bench/models/qwen2_5_vl.py",
      "pos = torch.arange(past + delta, past + delta + q,", "pos = torch.arange(past, past + q,", (T_QWEN,)),
    M("qwen_early_exit_positions_without_offset", "vh_bench/models/qwen2_5_vl.py",
      "return torch.where(index < inputs.length, table, index + delta)",
      "return torch.where(index < inputs.length, table, index)", (T_QWEN,)),
    M("qwen_grid_not_repeated_for_stacked_images", "vh_bench/models/qwen2_5_vl.py",
      "grid = grid.repeat(n // per, 1)", "grid = grid", (T_QWEN,)),
    # ---- CHAIR, POPE, OPOPE (metrics.md) ---------------------------------------------------------
    M("chair_i_over_captions", "vh_bench/metrics/chair.py",
      "\"CHAIRi\": _ratio(halluc_sum, mentions_sum,", "\"CHAIRi\": _ratio(halluc_sum, n_captions,", (T_CHAIR,)),
    M("chair_s_counts_mentions", "vh_bench/metrics/chair.py",
      "n_halluc_caps += bool(hallucinated)", "n_halluc_caps += len(hallucinated)", (T_CHAIR,)),
    M("chair_recall_counts_repeats", "vh_bench/metrics/chair.py",
      "covered = {nw for nw in cw.node_words if nw in gt_objs}", "covered = [nw for nw in cw.node_words if nw in gt_objs]",
      (T_CHAIR,)),
    M("chair_toilet_seat_rule_dropped", "vh_bench/metrics/chair_words.py",
      "if \"toilet\" in merged and \"seat\" in merged:", "if \"toilet\" in merged and \"seat\" in merged and False:",
      ("tests/metrics/test_chair_text.py",)),
    M("pope_precision_over_negatives", "vh_bench/metrics/pope.py",
      "precision = _div(self.tp, self.tp + self.fp, \"precision\", context)",
      "precision = _div(self.tp, self.tp + self.fn, \"precision\", context)", (T_POPE,)),
    M("pope_official_parser_misses_not", "vh_bench/metrics/pope.py",
      "return \"no\" if (\"No\" in words or \"not\" in words or \"no\" in words) else \"yes\"",
      "return \"no\" if (\"No\" in words or \"no\" in words) else \"yes\"", (T_POPE,)),
    M("pope_yes_ratio_from_labels", "vh_bench/metrics/pope.py",
      "        if pred == \"yes\":\n            c[\"n_yes\"] += 1",
      "        if label == \"yes\":\n            c[\"n_yes\"] += 1\n        if pred == \"yes\":", (T_POPE,)),
    M("opope_substring_whole_name", "vh_bench/metrics/opope.py",
      "return any(piece in caption for piece in obj.split(\" \"))", "return obj in caption", (T_OPOPE,)),
    M("opope_case_insensitive", "vh_bench/metrics/opope.py",
      "return any(piece in caption for piece in obj.split(\" \"))",
      "return any(piece.lower() in caption.lower() for piece in obj.split(\" \"))", (T_OPOPE,)),
    M("pope_popular_negatives_least_frequent", "vh_bench/data/pope_gen.py",
      "popular = tuple(sorted(objects_all, key=lambda o: -freq[o]))",
      "popular = tuple(sorted(objects_all, key=lambda o: freq[o]))", (T_OPOPE, T_POPEGEN)),
    M("pope_adversarial_uses_popular_order", "vh_bench/data/pope_gen.py",
      "candidates = tables.adversarial_order.get(positive, ())", "candidates = tables.popular_order",
      (T_OPOPE, T_POPEGEN)),
)


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed | survived | stale
    seconds: float
    detail: str = ""


def copy_repo(dest: Path) -> Path:
    """The working tree as it is (tracked and untracked files), without VCS data or caches."""
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    return dest


def pytest_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Built tiny models and the NLTK root are shared with the source checkout (they do not depend
    # on the mutated code); bytecode is not written so a restored file is never shadowed.
    env.setdefault("VH_BENCH_CACHE", str(ROOT / ".cache"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["TORCH_EXTENSIONS_DIR"] = str(WORK / "torch_extensions")
    env["PYTHONPATH"] = str(copy)  # the copy's packages, never the editable install's source
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


# Third-party modules every selection needs, imported once here so that each mutant's run (a fork of
# this process) starts without paying for torch and transformers again. The project's own modules
# (vh_bench, methods, tests) are never imported here: each child imports them from the mutated copy.
PRELOAD = (
    "torch", "numpy", "PIL.Image", "pytest", "hydra", "omegaconf", "transformers",
    "transformers.models.llama.modeling_llama", "transformers.models.llava.modeling_llava",
    "transformers.models.clip.modeling_clip", "transformers.models.blip.modeling_blip",
)  # fmt: skip


def preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # a missing optional module only costs its import time later
            pass
    for name in list(sys.modules):
        if name.split(".")[0] in ("vh_bench", "methods", "tests"):
            raise SystemExit(f"mutants: {name} was imported before the copy was mutated")


def _child(copy: Path, args: list[str], log: Path) -> None:
    """In the forked child: become a pytest run inside the copy; never returns."""
    rc = 3
    try:
        env = pytest_env(copy)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.environ.update(env)
        os.chdir(copy)
        sys.path.insert(0, str(copy))
        import pytest

        rc = int(pytest.main(args))
    except BaseException as exc:  # noqa: BLE001 - report anything, the parent only sees the code
        print(f"mutants child: {type(exc).__name__}: {exc}", flush=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """`pytest -x -q` on `tests` inside the copy, in a forked child (niced); (exit code, last line)."""
    args = ["-x", "-q", "-p", "no:cacheprovider", "-W", "ignore", *tests]
    log = WORK / "last_run.log"
    pid = os.fork()
    if pid == 0:
        os.nice(19)
        _child(copy, args, log)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            rc = 124
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return rc, tail[-1] if tail else ""


def check_imports(copy: Path) -> None:
    """The copy must import its own modules, or mutating it would test nothing."""
    pid = os.fork()
    if pid == 0:
        try:
            os.environ.update(pytest_env(copy))
            os.chdir(copy)
            sys.path.insert(0, str(copy))
            import methods.vcd
            import vh_bench.metrics.chair

            ok = all(Path(m.__file__).resolve().is_relative_to(copy.resolve()) for m in (methods.vcd, vh_bench.metrics.chair))
        except BaseException:  # noqa: BLE001
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("mutants: the temporary copy does not import its own code")


def apply(copy: Path, m: Mutant) -> str | None:
    """Patch the copy; returns the original text, or None when the snippet is not found exactly once."""
    path = copy / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        return None
    path.write_text(text.replace(m.old, m.new))
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", default="", help="only mutants whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the test selections")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per mutant's test run")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if args.k in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:45s} {m.path:35s} {' '.join(m.tests)}")
        return 0
    if not chosen:
        print(f"mutants: no mutant name contains {args.k!r}", file=sys.stderr)
        return 2
    copy = WORK / "repo"
    # Only this check uses its extension directory: a lock there is left by a killed earlier run.
    for lock in (WORK / "torch_extensions").glob("*/lock"):
        lock.unlink()
    if copy.exists():
        shutil.rmtree(copy)
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        copy_repo(copy)
        preload()
        check_imports(copy)
        if not args.no_baseline:
            selections = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            t0 = time.perf_counter()
            rc, tail = run_tests(copy, selections, args.timeout * 4)
            print(f"baseline (unmutated, {len(selections)} selections): {'pass' if rc == 0 else 'FAIL'} "
                  f"in {time.perf_counter() - t0:.0f} s  {tail}", flush=True)  # fmt: skip
            if rc != 0:
                print("mutants: the test selections fail without any mutation; fix them first", file=sys.stderr)
                return 2
        outcomes: list[Outcome] = []
        for i, m in enumerate(chosen, 1):
            t0 = time.perf_counter()
            original = apply(copy, m)
            if original is None:
                outcomes.append(Outcome(m, "stale", 0.0, f"snippet not found exactly once in {m.path}"))
            else:
                try:
                    rc, tail = run_tests(copy, m.tests, args.timeout)
                finally:
                    (copy / m.path).write_text(original)
                # pytest: 1 = tests failed, 2 = interrupted (a mutant that breaks the import), 124 = our
                # timeout (a mutant that loops); 4 (usage error) and 5 (nothing collected) mean the
                # selection itself is wrong, which kills nothing
                status = {0: "survived", 4: "stale", 5: "stale"}.get(rc, "killed")
                outcomes.append(Outcome(m, status, time.perf_counter() - t0, tail))
            o = outcomes[-1]
            print(f"[{i:2d}/{len(chosen)}] {o.status.upper():8s} {m.name:45s} {o.seconds:5.0f} s  {o.detail}", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    bad = [o for o in outcomes if o.status != "killed"]
    killed = len(outcomes) - len(bad)
    print(f"\n{killed}/{len(outcomes)} mutants killed", end="")
    print("" if not bad else "; not killed: " + ", ".join(f"{o.mutant.name} ({o.status})" for o in bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
