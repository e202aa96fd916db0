"""HALC candidate scoring with BLIP (methods.md §7.7): `BlipForImageTextRetrieval`, ITM or ITC.

A session (`BlipScorer.session`) holds one sample's image. Its features are computed once; for
the ITM head the cross-attention keys/values of every text layer are computed once too (they
depend on the image only) and broadcast over the candidate texts, so scoring a verification costs
only the text side.
Both equal the model's own forward (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from methods.settings import SCORERS
from vh_bench.models.cache_kwarg import cache_kwargs

SCORER_HUB_ID = "Salesforce/blip-itm-large-coco"
SCORER_MODEL_TYPE = "blip"
# What each scorer is, for results.json (`implementation.halc_scorer`). Neither is HALC's score: its
# code ranks with `BlipModel.logits_per_image` loaded from `Salesforce/blip-image-captioning-large`,
# a captioning checkpoint (vision tower + text *decoder*) that holds none of BlipModel's text encoder
# (`text_model.*`) nor its projections (`visual_projection`, `text_projection`): from_pretrained
# initialises them at random, so HALC's ranking is a cosine through random projections of a random
# text encoder (checked on a tiny checkpoint in tests/methods/test_halc_models.py). That score cannot
# be reproduced, so both options here are substitutes, and neither is the "closer analogue".
SCORER_LABELS = {
    "blip_itm": "BLIP image-text matching (BlipForImageTextRetrieval ITM head, P(match)); a substitute "
    "for HALC's BlipModel score, whose text encoder and projections were random",
    "blip_itc": "BLIP image-text contrastive cosine (BlipForImageTextRetrieval, use_itm_head=False); a "
    "substitute for HALC's BlipModel score, whose text encoder and projections were random",
}


class BlipScorer:
    def __init__(self, model: Any, processor: Any, *, mode: str = "blip_itm") -> None:
        if mode not in SCORERS:
            raise ValueError(f"unknown scorer {mode!r}; one of {SCORERS}")
        self.model, self.processor, self.mode = model, processor, mode

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def session(self, image: Image.Image) -> "_BlipSession":
        return _BlipSession(self, image)


class _BlipSession:
    def __init__(self, scorer: BlipScorer, image: Image.Image) -> None:
        self.scorer = scorer
        self._image = image
        self._embeds: torch.Tensor | None = None
        self._cross: Any = None
        self._image_feat: torch.Tensor | None = None

    def _image_embeds(self) -> torch.Tensor:
        if self._embeds is None:
            sc = self.scorer
            pv = sc.processor.image_processor(images=self._image, return_tensors="pt")["pixel_values"]
            pv = pv.to(sc.device, next(sc.model.parameters()).dtype)
            self._embeds = sc.model.vision_model(pixel_values=pv).last_hidden_state  # (1, n, d)
        return self._embeds

    def prepare(self) -> None:
        """Compute everything that depends on the image only (called inside the timed prefill)."""
        embeds = self._image_embeds()
        model = self.scorer.model
        if self.scorer.mode == "blip_itc":
            if self._image_feat is None:
                self._image_feat = torch.nn.functional.normalize(model.vision_proj(embeds[:, 0, :]), dim=-1)
        elif self._cross is None:
            self._cross = self._cross_attention_cache(embeds)

    def _cross_attention_cache(self, embeds: torch.Tensor) -> Any:
        """Fill a cross-attention cache (batch 1) by encoding one dummy text against the image."""
        from transformers import DynamicCache, EncoderDecoderCache

        sc = self.scorer
        tok = sc.processor.tokenizer([""], return_tensors="pt")
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        sc.model.text_encoder(
            input_ids=tok["input_ids"].to(sc.device),
            attention_mask=tok["attention_mask"].to(sc.device),
            encoder_hidden_states=embeds,
            **cache_kwargs(sc.model.text_encoder, cache),
        )
        return cache.cross_attention_cache

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        sc = self.scorer
        max_len = int(sc.model.config.text_config.max_position_embeddings)
        tok = sc.processor.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return {"input_ids": tok["input_ids"].to(sc.device), "attention_mask": tok["attention_mask"].to(sc.device)}

    def score(self, texts: Sequence[str]) -> list[float]:
        from transformers import DynamicCache, EncoderDecoderCache

        if not texts:
            return []
        self.prepare()
        model = self.scorer.model
        tok = self._tokens(texts)
        if self.scorer.mode == "blip_itc":
            q = model.text_encoder(**tok).last_hidden_state
            text_feat = torch.nn.functional.normalize(model.text_proj(q[:, 0, :]), dim=-1)
            return (self._image_feat @ text_feat.t())[0].float().cpu().tolist()
        # ITM: a fresh self-attention cache per call; the image's cross-attention K/V are reused.
        cache = EncoderDecoderCache(DynamicCache(), self._cross)
        q = model.text_encoder(**tok, encoder_hidden_states=self._embeds, **cache_kwargs(model.text_encoder, cache))
        q = q.last_hidden_state
        itm = model.itm_head(q[:, 0, :]).float()
        return torch.softmax(itm, dim=-1)[:, 1].cpu().tolist()
