"""The one adapter that owns transformers' LLaVA internals (methods.md §1.1–1.2).

Methods ask the adapter for the decoder layers, final norm, lm_head, image span, a fresh cache and
a forward; they never reach into `model.model.language_model` themselves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError

from vh_bench import devices
from vh_bench.decoding import attention
from vh_bench.errors import ConfigError
from vh_bench.models import templates
from vh_bench.models.adapter import ModelInputs
from vh_bench.models.cache_kwarg import cache_kwargs

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_checkpoint(path_or_id: str, model_types: tuple[str, ...] = ("llava",),
                     example: str = "llava-hf/llava-1.5-7b-hf") -> None:
    """Fail before loading when a local directory is not a checkpoint of `model_types` (one line, names
    the key). Every family's adapter calls it with its own types (vh_bench/models/registry.py)."""
    p = Path(path_or_id)
    looks_local = p.is_absolute() or path_or_id.startswith((".", "~")) or p.exists()
    if not looks_local:
        from vh_bench.models.hub import check_hub_id

        check_hub_id(path_or_id)  # cached, or known to a reachable hub: else one line now
        return
    p = p.expanduser()
    if not p.is_dir():
        raise ConfigError("model.path", f"{p} does not exist", "point it at a LLaVA-1.5 checkpoint directory or a hub id")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ConfigError("model.path", f"{p} has no config.json", "not a Hugging Face checkpoint directory")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise ConfigError("model.path", f"{cfg} is not valid JSON ({exc})") from exc
    if model_type not in model_types:
        from vh_bench.models.registry import family_of_type

        other = family_of_type(model_type)
        fix = f"set model.family={other.name}" if other else f"use a checkpoint such as {example}"
        raise ConfigError(
            "model.path", f"{p} is a {model_type!r} checkpoint, not {' or '.join(map(repr, model_types))}", fix
        )
    if not any(p.glob("*.safetensors")):
        pickles = sorted(p.glob("*.bin"))
        if pickles:
            # Unpickling can run code (and torch refuses most such files with weights_only).
            raise ConfigError(
                "model.path",
                f"{p} holds only pickle weights ({pickles[0].name}), which vh_bench does not load",
                "use a safetensors checkpoint such as llava-hf/llava-1.5-7b-hf, or convert it",
            )
        raise ConfigError("model.path", f"{p} has no weight files (*.safetensors)", "the download is incomplete")
    for index in list(p.glob("*.safetensors.index.json")) + list(p.glob("*.bin.index.json")):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (json.JSONDecodeError, KeyError) as exc:
            raise ConfigError("model.path", f"{index} is not a valid weight index ({exc})") from exc
        missing = sorted(s for s in shards if not (p / s).is_file())
        if missing:
            raise ConfigError(
                "model.path",
                f"{p} is missing {len(missing)} of {len(shards)} weight shards (e.g. {missing[0]})",
                "the download is incomplete",
            )


def check_processor(processor: Any, config: Any, path: str) -> None:
    """Fail before the weights load when the processor would miscount the image tokens.

    Older llava-hf snapshots have no `processor_config.json`: the processor then has no
    `patch_size` and crashes at the first sample (`int // NoneType`), or counts 575 image tokens
    instead of 576 without `num_additional_image_tokens`. One line, with the file to add.
    """
    vcfg = config.vision_config
    strategy = config.vision_feature_select_strategy
    # CLIP's tower emits one CLS embedding besides its patches; "default" drops it again.
    wanted = {"patch_size": int(vcfg.patch_size), "vision_feature_select_strategy": strategy,
              "num_additional_image_tokens": 1}  # fmt: skip
    got = {k: getattr(processor, k, None) for k in wanted}
    wrong = [k for k in wanted if got[k] != wanted[k]]
    if not wrong:
        return
    if got["patch_size"] is None:
        problem = f"{path} has no processor config with patch_size (an older llava-hf snapshot?)"
    else:
        problem = f"{path}'s processor config sets {', '.join(f'{k}={got[k]!r}' for k in wrong)}"
    fix = json.dumps({**wanted, "image_token": "<image>", "processor_class": "LlavaProcessor"})
    raise ConfigError("model.path", problem, f"add processor_config.json holding {fix}, or use a current snapshot")


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


class LlavaAdapter:
    """Hugging Face `LlavaForConditionalGeneration` + `LlavaProcessor`, batch-1, no padding.

    The reference implementation of the adapter contract (vh_bench/models/adapter.py).
    """

    family = "llava"
    model_types: tuple[str, ...] = ("llava",)
    example_hub_id = "llava-hf/llava-1.5-7b-hf"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        prompt_template: str = "hf",
        name: str = "llava",
        attn_backend: str | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.prompt_template = self.check_template(prompt_template)
        cfg = model.config
        self.config = cfg
        self.image_token_id = int(cfg.image_token_id)
        self.n_layers = int(cfg.text_config.num_hidden_layers)
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = cfg.text_config.eos_token_id
        self.eos_token_id = int(eos[0] if isinstance(eos, (list, tuple)) else eos)
        self.unk_token_id = self.tokenizer.unk_token_id
        self.resolve_layout(model)
        # The harness's attention layer (methods.md §1.6). A stock reference model (tests) has no
        # attention state, and its backend is transformers' own implementation name.
        text_attn = cfg.text_config._attn_implementation
        self.attention_state: attention.AttentionState | None = None
        self.attn_backend: str = text_attn
        if text_attn == attention.ATTN_NAME:
            # Another adapter over the same model object shares its state (None: keep its backend).
            self.attention_state = attention.attach(self.attention_modules(), attn_backend)
            self.attn_backend = self.attention_state.backend

    def resolve_layout(self, model: Any) -> None:
        """The modules methods reach through the contract, resolved once (methods.md §1.1): the
        decoder stack (`language_model`: layers, norm, rotary, embeddings), the vision side, the
        output projection. transformers 4.4x nested these differently; each family has its own."""
        inner = model.model
        self.language_model = inner.language_model
        self.vision_tower = inner.vision_tower
        self.projector = inner.multi_modal_projector
        self.lm_head = model.lm_head

    @staticmethod
    def check_template(template: str) -> str:
        """The literal template (a family with its own placement rule checks it here)."""
        return templates.resolve_template(template)

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        attn_implementation: str = "sdpa",
        prompt_template: str = "hf",
        name: str = "llava",
        stock_attention: bool = False,
        processor_options: dict[str, Any] | None = None,
    ) -> "LlavaAdapter":
        """Load a checkpoint. `attn_implementation` is the plain-path kernel (`runtime.attn_backend`).

        The language model always runs `vh_attn` (every method, vanilla included, so speed differences
        come from the methods, not kernels); `stock_attention=True` instead gives transformers' own
        `attn_implementation` with no attention control, for reference runs in tests only.
        `processor_options`: a family's processor settings from the model config (`load_processor`).
        """
        from transformers import AutoConfig

        if dtype not in DTYPES:
            raise ConfigError("runtime.dtype", f"{dtype!r} is not one of {sorted(DTYPES)}")
        if attn_implementation not in attention.BACKENDS:
            raise ConfigError(
                "runtime.attn_backend", f"{attn_implementation!r} is not one of {', '.join(attention.BACKENDS)}"
            )
        check_checkpoint(path, cls.model_types, cls.example_hub_id)
        cls.check_template(prompt_template)
        try:
            # A broken tokenizer or processor file is the checkpoint's fault too: one line.
            processor = cls.load_processor(path, **(processor_options or {}))
            auto_config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError("model.path", f"cannot load the processor from {path}: {first}") from exc
        cls.check_processor(processor, auto_config, path)  # before the weights: old snapshots (issue 19)
        # Dict form: only the language model gets the harness's attention; the vision tower keeps
        # sdpa (its attention modules have no layer_idx). methods.md §1.6.
        text_attn = attn_implementation if stock_attention else attention.ATTN_NAME
        try:
            model = cls.model_class().from_pretrained(
                path,
                dtype=DTYPES[dtype],
                attn_implementation={"text_config": text_attn, "vision_config": "sdpa"},
                trust_remote_code=False,
                tp_plan=None,  # torchrun shards data, never the model
                **devices.load_kwargs(device),  # CUDA: straight onto the GPU, no full copy in host RAM
            )
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            # Truncated or corrupt weight or tokenizer files surface here as library errors.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError("model.path", f"cannot load weights from {path}: {first}") from exc
        if not devices.is_cuda(device):  # on CUDA the device_map has placed every weight already
            model.to(device)
        model.eval()
        model.requires_grad_(False)
        return cls(model, processor, prompt_template=prompt_template, name=name, attn_backend=attn_implementation)

    @staticmethod
    def model_class() -> Any:
        """The transformers class `load` calls `from_pretrained` on (a family's subclass overrides)."""
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    @staticmethod
    def load_processor(path: str, **options: Any) -> Any:
        """The checkpoint's processor (a family whose processor needs settings or other classes overrides)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, trust_remote_code=False, **options)

    @staticmethod
    def check_processor(processor: Any, config: Any, path: str) -> None:
        check_processor(processor, config, path)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.language_model.layers

    @property
    def final_norm(self) -> torch.nn.Module:
        return self.language_model.norm

    @property
    def embed_tokens(self) -> torch.nn.Module:
        return self.language_model.embed_tokens

    @property
    def attn_setting(self) -> str:
        """The attention setting recorded with every result (methods.md §1.8)."""
        text = self.config.text_config._attn_implementation
        vision = self.config.vision_config._attn_implementation
        if self.attention_state is not None:
            text = f"{text}({self.attn_backend})"
        return f"text={text},vision={vision}"

    def attention_modules(self) -> list[torch.nn.Module]:
        """The language model's self-attention modules (the ones `vh_attn` serves)."""
        return [layer.self_attn for layer in self.layers]

    def register_layer_pre_hook(self, layer_idx: int, hook: Any) -> Any:
        """A `forward_pre_hook(module, args, kwargs)` on decoder layer `layer_idx`; returns its handle."""
        return self.layers[layer_idx].register_forward_pre_hook(hook, with_kwargs=True)

    # ---- inputs --------------------------------------------------------------------------
    def render_prompt(self, prompt: str) -> str:
        return self.prompt_template.replace("{prompt}", prompt)

    def prepare(self, image: Image.Image, prompt: str) -> ModelInputs:
        """Template → processor → tensors on the model's device; the image span is checked."""
        text = self.render_prompt(prompt)
        enc = self.processor(images=image, text=text, return_tensors="pt")
        input_ids = enc["input_ids"].to(self.device)
        pixel_values = enc["pixel_values"].to(self.device, self.dtype)
        vision_inputs = {k: enc[k].to(self.device) for k in self.vision_input_names}
        start, n = self.image_span(input_ids, self.expected_image_tokens(image))
        return ModelInputs(input_ids, pixel_values, start, n, text, image, vision_inputs)

    # Keys of the processor's output that the vision forward needs beside pixel_values.
    vision_input_names: tuple[str, ...] = ()

    def expected_image_tokens(self, image: Image.Image | None = None) -> int:
        """How many visual tokens the vision side yields for `image` (checked against the prompt)."""
        cfg = self.config
        n = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
        return n + (cfg.vision_feature_select_strategy != "default")

    def vision_pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """The vision tower's input for `images` (HALC's views), batched, in the model dtype."""
        pv = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pv.to(self.device, self.dtype)

    def vision_batch(self, images: list[Image.Image], like: ModelInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`images` as a batch of rows that each fill `like`'s image span (HALC's views): pixel
        values and the vision inputs to pass with them. LLaVA-1.5: every image gives 576 tokens."""
        return self.vision_pixels(images), {}

    def vision_kwargs(self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None) -> dict:
        """The extra vision keywords for a forward of `pixel_values`, broadcast to its images (VCD's
        batched pair stacks two images of one sample)."""
        return dict(vision_inputs or {})

    @classmethod
    def refuse(cls, method: Any) -> str | None:
        """Planning, before loading: None, as LLaVA-1.5 serves every method (one run of 576 tokens)."""
        return None

    def image_span(self, input_ids: torch.Tensor, expected: int | None = None) -> tuple[int, int]:
        """(start, n_img) of the contiguous image-token run (methods.md §1.2); never hard-coded.
        `expected`: the count the vision side yields (default: `expected_image_tokens()`)."""
        expected = self.expected_image_tokens() if expected is None else expected
        pos = torch.nonzero(input_ids[0] == self.image_token_id).flatten()
        if pos.numel() == 0:
            raise ConfigError("model.prompt_template", "the rendered prompt holds no image token")
        start, n = int(pos[0]), int(pos.numel())
        if int(pos[-1]) != start + n - 1:
            raise ConfigError("model.prompt_template", "image tokens are not contiguous in the rendered prompt")
        if n != expected:
            raise ConfigError(
                "model.prompt_template", f"{n} image tokens in the prompt but the vision tower yields {expected}"
            )
        return start, n

    # ---- model calls ---------------------------------------------------------------------
    def new_cache(self):
        """A fresh `DynamicCache` whose layers append in place (vh_bench/decoding/kv_cache.py)."""
        from vh_bench.decoding.kv_cache import GrowingDynamicCache

        return GrowingDynamicCache(config=self.config.text_config)

    def forward(
        self,
        *,
        cache: Any,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        vision_inputs: dict[str, torch.Tensor] | None = None,
    ) -> Any:
        """One batch-1 (rows = beams/branches) forward with the rules of methods.md §1.1.

        Raises if the model did not write into `cache`: a forward that ignored it (an unknown cache
        keyword is swallowed by `**kwargs`) would decode every later step without its context.
        """
        return self.cached_call(
            self.model,
            cache,
            input_ids=input_ids if inputs_embeds is None else None,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            **(self.vision_kwargs(pixel_values, vision_inputs) if pixel_values is not None else {}),
            **self.position_kwargs(cache, input_ids, vision_inputs),
        )

    @staticmethod
    def cached_call(module: Any, cache: Any, **kwargs: Any) -> Any:
        """`module(**kwargs)` as one cached step (no mask, last position's logits, the installed
        version's cache keyword); raises if `module` did not write into `cache`."""
        before = cache.get_seq_length()
        out = module(
            attention_mask=None,
            use_cache=True,
            logits_to_keep=1,
            return_dict=True,
            **kwargs,
            **cache_kwargs(module, cache),  # the installed version's name for it (cache_kwarg.py)
        )
        if cache.get_seq_length() <= before:
            raise RuntimeError(
                f"transformers {_transformers_version()} ignored the harness's KV cache; "
                "use a version in pyproject.toml's tested range"
            )
        return out

    def position_kwargs(
        self, cache: Any, input_ids: torch.Tensor | None, vision_inputs: dict[str, torch.Tensor] | None
    ) -> dict:
        """Explicit position keywords for a forward: none for LLaVA, whose 1-D positions continue from
        the cache length. A family with positions of its own (Qwen2.5-VL's M-RoPE) computes them here."""
        return {}

    def rope_position_ids(self, inputs: ModelInputs, index: torch.Tensor) -> torch.Tensor:
        """Rotary position ids of sequence indices `index` (rows, q) of a stream that begins with
        `inputs`' prompt (early-exit streams that drop tokens, vh_bench/decoding/layer_prefix.py).
        LLaVA: the index itself."""
        return index

    @staticmethod
    def last_logits(out: Any) -> torch.Tensor:
        """(rows, V) fp32: all method arithmetic on logits is fp32 (methods.md §0)."""
        return out.logits[:, -1, :].float()

    def image_features(
        self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Projected image features (n_img, hidden) with the config's layer/strategy passed explicitly."""
        cfg = self.config
        feats = self.model.model.get_image_features(
            pixel_values=pixel_values,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            **self.vision_kwargs(pixel_values, vision_inputs),
        )
        if hasattr(feats, "pooler_output"):  # transformers 5 returns a model output
            feats = feats.pooler_output
        if isinstance(feats, (list, tuple)):
            feats = torch.cat(list(feats), dim=0)
        return feats.reshape(-1, feats.shape[-1])

    def build_inputs_embeds(self, inputs: ModelInputs, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the projected image features written into the image span (§1.5)."""
        embeds = self.embed_tokens(inputs.input_ids).clone()
        feats = self.image_features(inputs.pixel_values if pixel_values is None else pixel_values, inputs.vision_inputs)
        s, n = inputs.image_start, inputs.n_image_tokens
        embeds[0, s : s + n] = feats.to(embeds.dtype)
        return embeds

    def decode_text(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()
