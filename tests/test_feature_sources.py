"""The frozen feature sources the team's heads read: Kosmos-2 and CLIP weights taken from inside a team
checkpoint (in their layouts), open_clip ViT names converted to transformers' CLIP exactly (checked against an
independent implementation of open_clip's forward pass), open_clip's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from policies.backbones.clip import OPENAI_MEAN, OPENAI_STD, load_clip_image, load_clip_text
from policies.backbones.tiny_kosmos2 import build_tiny_kosmos2
from policies.heads import make_head
from policies.vla import build_vla_policy

try:
    from tests.conftest_vla import INSTRUCTION, observation, single_torch_thread
except ImportError:  # tests/ is not a package
    from conftest_vla import INSTRUCTION, observation, single_torch_thread  # noqa: F401

WIDTH, LAYERS, PATCH, IMAGE, PROJ = 64, 2, 16, 32, 24


def openclip_visual_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under open_clip's ``visual.*`` names (a toy ViT: width 64, 2 blocks, patch 16, image 32)."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=gen) * scale

    grid = IMAGE // PATCH
    state = {"visual.class_embedding": r(WIDTH), "visual.positional_embedding": r(grid * grid + 1, WIDTH),
             "visual.conv1.weight": r(WIDTH, 3, PATCH, PATCH), "visual.ln_pre.weight": 1 + r(WIDTH),
             "visual.ln_pre.bias": r(WIDTH), "visual.ln_post.weight": 1 + r(WIDTH), "visual.ln_post.bias": r(WIDTH),
             "visual.proj": r(WIDTH, PROJ, scale=0.2)}
    for i in range(LAYERS):
        p = f"visual.transformer.resblocks.{i}."
        state.update({p + "ln_1.weight": 1 + r(WIDTH), p + "ln_1.bias": r(WIDTH),
                      p + "attn.in_proj_weight": r(3 * WIDTH, WIDTH, scale=0.2), p + "attn.in_proj_bias": r(3 * WIDTH),
                      p + "attn.out_proj.weight": r(WIDTH, WIDTH, scale=0.2), p + "attn.out_proj.bias": r(WIDTH),
                      p + "ln_2.weight": 1 + r(WIDTH), p + "ln_2.bias": r(WIDTH),
                      p + "mlp.c_fc.weight": r(4 * WIDTH, WIDTH, scale=0.2), p + "mlp.c_fc.bias": r(4 * WIDTH),
                      p + "mlp.c_proj.weight": r(WIDTH, 4 * WIDTH, scale=0.2), p + "mlp.c_proj.bias": r(WIDTH)})
    state["logit_scale"] = torch.tensor(4.6)  # a text-tower key of the whole open_clip model, ignored
    return state


def openclip_encode_image(state: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """open_clip's ``VisionTransformer.forward`` + ``proj`` for the ``openai`` models (QuickGELU), written here
    from its definition, independently of transformers."""
    s = state
    x = F.conv2d(pixels, s["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    cls = s["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + s["visual.positional_embedding"]
    x = F.layer_norm(x, (WIDTH,), s["visual.ln_pre.weight"], s["visual.ln_pre.bias"])
    heads = WIDTH // 64
    for i in range(LAYERS):
        p = f"visual.transformer.resblocks.{i}."
        h = F.layer_norm(x, (WIDTH,), s[p + "ln_1.weight"], s[p + "ln_1.bias"]).transpose(0, 1)
        attn, _ = F.multi_head_attention_forward(h, h, h, WIDTH, heads, s[p + "attn.in_proj_weight"],
                                                 s[p + "attn.in_proj_bias"], None, None, False, 0.0,
                                                 s[p + "attn.out_proj.weight"], s[p + "attn.out_proj.bias"],
                                                 training=False, need_weights=False)
        x = x + attn.transpose(0, 1)
        h = F.layer_norm(x, (WIDTH,), s[p + "ln_2.weight"], s[p + "ln_2.bias"])
        h = F.linear(h, s[p + "mlp.c_fc.weight"], s[p + "mlp.c_fc.bias"])
        x = x + F.linear(h * torch.sigmoid(1.702 * h), s[p + "mlp.c_proj.weight"], s[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x[:, 0], (WIDTH,), s["visual.ln_post.weight"], s["visual.ln_post.bias"])
    return x @ s["visual.proj"]


def test_openclip_names_convert_to_the_same_network():
    state = openclip_visual_state()
    encoder = load_clip_image(state)
    assert encoder.dim == PROJ and encoder.model.config.image_size == IMAGE
    pixels = torch.randn(3, 3, IMAGE, IMAGE)
    with torch.inference_mode():
        ours = encoder.model(pixel_values=pixels).image_embeds
    torch.testing.assert_close(ours, openclip_encode_image(state, pixels), atol=2e-5, rtol=1e-4)


def test_openclip_preprocessing_resizes_the_short_side_crops_and_normalises():
    encoder = load_clip_image(openclip_visual_state())
    frame = observation(4, size=(40, 64))["image"]  # 16:10, like a camera frame
    got = encoder.processor(images=[frame], return_tensors="pt")["pixel_values"][0]
    resized = Image.fromarray(frame).resize((51, IMAGE), Image.Resampling.BICUBIC)  # short side 40 -> 32
    left = (51 - IMAGE) // 2
    crop = np.asarray(resized, np.float32)[:, left:left + IMAGE] / 255.0
    want = (torch.from_numpy(crop).permute(2, 0, 1) - torch.tensor(OPENAI_MEAN).view(3, 1, 1)) / torch.tensor(
        OPENAI_STD).view(3, 1, 1)
    assert got.shape == (3, IMAGE, IMAGE)
    assert (got - want).abs().mean() < 0.02  # one-pixel rounding of the resized width aside


def team_pth(path, head, frozen):
    """A team-style ``.pth`` with ``head``'s tensors and frozen models (prefix -> tensors)."""
    state = dict(head.state_dict())
    for prefix, tensors in frozen.items():
        state.update({prefix + k: v for k, v in tensors.items()})
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "loss": 0.1, "mae": 0.3}, path)
    return path


def kosmos2_model_state(scale: float) -> dict[str, torch.Tensor]:
    """The toy Kosmos-2 in ``Kosmos2Model`` names of transformers 4.x (``text_model.layers...``), perturbed."""
    model, _ = build_tiny_kosmos2()
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("text_model.lm_head"):
            continue
        if key.startswith("text_model.model."):
            key = "text_model." + key[len("text_model.model."):]
        out[key] = value * scale if key.endswith("patch_embedding.weight") else value
    return out


def test_kosmos_weights_inside_a_team_file_are_used(tmp_path):
    head = make_head("case1", 32, 32, hidden_dim=16)
    path = team_pth(tmp_path / "case1.pth", head, {"kosmos.": kosmos2_model_state(1.5)})
    policy = build_vla_policy("case1", checkpoint=path, backbone="tiny-kosmos2", dead_zone=False)
    plain = build_vla_policy("case1", checkpoint=team_pth(tmp_path / "plain.pth", head, {}), backbone="tiny-kosmos2")
    weight = policy.backbone.model.vision_model.model.embeddings.patch_embedding.weight
    reference = plain.backbone.model.vision_model.model.embeddings.patch_embedding.weight
    torch.testing.assert_close(weight, reference * 1.5)
    img = observation(2)["image"]
    assert not torch.allclose(policy.backbone.encode_images(img), plain.backbone.encode_images(img))
    policy.reset(INSTRUCTION)
    assert np.all(np.isfinite(policy.act(observation(3))))


def test_case2_reads_the_open_clip_weights_inside_its_file(tmp_path):
    head = make_head("case2", 32, 32, clip_dim=PROJ, hidden_dim=16)
    path = team_pth(tmp_path / "case2.pth", head, {"clip_model.": openclip_visual_state(seed=5)})
    policy = build_vla_policy("case2", checkpoint=path, backbone="tiny-kosmos2", dead_zone=False)
    img = observation(4)["image"]
    feats = policy.encode_frames(img[None], INSTRUCTION)
    assert feats.shape == (1, 32 + PROJ)
    expected = load_clip_image(openclip_visual_state(seed=5)).encode(img[None])
    torch.testing.assert_close(feats[:, 32:], expected.float())


def test_hybrid_reads_the_clip_text_weights_inside_its_file(tmp_path):
    tiny_text = load_clip_text("tiny")
    state = {"text_model." + k: v * 1.1 for k, v in tiny_text.model.state_dict().items()
             if not k.endswith("position_ids")}
    head = make_head("hybrid", 32, 64, hidden_dim=16)
    path = team_pth(tmp_path / "hybrid.pth", head, {"clip_text.": state, "kosmos2_model.": kosmos2_model_state(1.0)})
    policy = build_vla_policy("hybrid", checkpoint=path, backbone="tiny-kosmos2", dead_zone=False)
    text = policy.backbone.encode_instruction([INSTRUCTION], ("clip_text",))
    assert text.shape == (1, 64)
    assert not torch.allclose(text, tiny_text.encode([INSTRUCTION]).float())  # the file's (scaled) weights
    policy.reset(INSTRUCTION)
    assert policy.act(observation(1)).shape == (3,)


def test_a_clip_stream_without_clip_weights_names_the_remedy(tmp_path):
    from policies.backbones import MissingStreamError

    path = team_pth(tmp_path / "case2.pth", make_head("case2", 1024, 2048), {})
    with pytest.raises(MissingStreamError, match="clip_image needs open_clip ViT-B-32 weights"):
        build_vla_policy("case2", checkpoint=path, backbone="kosmos2")
