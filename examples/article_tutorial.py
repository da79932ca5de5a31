"""The article's ResNet-18 tutorial, run on lightning-xai's attribution engine.

The attribution code below is the article's own (``../shared/seed``), with only
its import lines changed from ``captum.attr`` to ``attribution``.  Two things
cannot be reproduced offline and are replaced:

* pretrained ImageNet weights cannot be downloaded, so ResNet-18 is randomly
  initialised from a fixed seed (the maps explain a random network);
* the cat photo and the ImageNet label file come from the internet, so the
  cat is scikit-image's bundled ``chelsea`` sample and labels are placeholders.

Every figure is saved as a PNG under ``--out``.

    python examples/article_tutorial.py --out outputs/article_tutorial
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import LinearSegmentedColormap
from PIL import Image
from torchvision import models, transforms

# The article imports these from captum.attr; this is the only change to its code.
from attribution import GradientShap, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion
from attribution import visualization as viz


def load_cat() -> Image.Image:
    from skimage import data  # the examples extra: pip install -e ".[examples]"

    return Image.fromarray(data.chelsea())


def main(out_dir: Path, quick: bool = False) -> list[Path]:
    """Run the tutorial; ``quick`` shrinks the image and step counts for smoke tests."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []

    def save(figure_and_axes, name: str) -> None:
        figure, _ = figure_and_axes
        path = out_dir / f"{name}.png"
        figure.savefig(path, bbox_inches="tight")
        saved.append(path)
        matplotlib.pyplot.close(figure)

    size, steps = (64, 8) if quick else (224, 200)
    torch.manual_seed(0)
    model = models.resnet18(weights=None)  # the article: models.resnet18(pretrained=True)
    model = model.eval()
    idx_to_labels = {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}

    transform = transforms.Compose(
        [transforms.Resize(size + size // 7), transforms.CenterCrop(size), transforms.ToTensor()]
    )
    transform_normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    img = load_cat()
    transformed_img = transform(img)
    input = transform_normalize(transformed_img)
    input = input.unsqueeze(0)

    output = model(input)
    output = F.softmax(output, dim=1)
    prediction_score, pred_label_idx = torch.topk(output, 1)
    pred_label_idx.squeeze_()
    predicted_label = idx_to_labels[str(pred_label_idx.item())][1]
    print("Predicted:", predicted_label, "(", prediction_score.squeeze().item(), ")")

    timings = {}
    start = time.perf_counter()
    integrated_gradients = IntegratedGradients(model)
    attributions_ig = integrated_gradients.attribute(input, target=pred_label_idx, n_steps=steps)
    timings["IntegratedGradients"] = time.perf_counter() - start

    default_cmap = LinearSegmentedColormap.from_list(
        "custom blue", [(0, "#ffffff"), (0.25, "#000000"), (1, "#000000")], N=256
    )
    save(
        viz.visualize_image_attr(
            np.transpose(attributions_ig.squeeze().cpu().detach().numpy(), (1, 2, 0)),
            np.transpose(transformed_img.squeeze().cpu().detach().numpy(), (1, 2, 0)),
            method="heat_map",
            cmap=default_cmap,
            show_colorbar=True,
            sign="positive",
            outlier_perc=1,
        ),
        "1_integrated_gradients",
    )

    start = time.perf_counter()
    noise_tunnel = NoiseTunnel(integrated_gradients)
    attributions_ig_nt = noise_tunnel.attribute(
        input, nt_samples=2 if quick else 10, nt_type="smoothgrad_sq", target=pred_label_idx
    )
    timings["NoiseTunnel(IntegratedGradients)"] = time.perf_counter() - start
    save(
        viz.visualize_image_attr_multiple(
            np.transpose(attributions_ig_nt.squeeze().cpu().detach().numpy(), (1, 2, 0)),
            np.transpose(transformed_img.squeeze().cpu().detach().numpy(), (1, 2, 0)),
            ["original_image", "heat_map"],
            ["all", "positive"],
            cmap=default_cmap,
            show_colorbar=True,
        ),
        "2_noise_tunnel",
    )

    torch.manual_seed(0)
    np.random.seed(0)
    start = time.perf_counter()
    gradient_shap = GradientShap(model)
    rand_img_dist = torch.cat([input * 0, input * 1])
    attributions_gs = gradient_shap.attribute(
        input, n_samples=50, stdevs=0.0001, baselines=rand_img_dist, target=pred_label_idx
    )
    timings["GradientShap"] = time.perf_counter() - start
    save(
        viz.visualize_image_attr_multiple(
            np.transpose(attributions_gs.squeeze().cpu().detach().numpy(), (1, 2, 0)),
            np.transpose(transformed_img.squeeze().cpu().detach().numpy(), (1, 2, 0)),
            ["original_image", "heat_map"],
            ["all", "absolute_value"],
            cmap=default_cmap,
            show_colorbar=True,
        ),
        "3_gradient_shap",
    )

    start = time.perf_counter()
    layer_gradcam = LayerGradCam(model, model.layer3[1].conv2)
    attributions_lgc = layer_gradcam.attribute(input, target=pred_label_idx)
    timings["LayerGradCam"] = time.perf_counter() - start
    save(
        viz.visualize_image_attr(
            attributions_lgc[0].cpu().permute(1, 2, 0).detach().numpy(), sign="all", title="Layer 3 Block 1 Conv 2"
        ),
        "4_layer_gradcam",
    )
    upsamp_attr_lgc = LayerAttribution.interpolate(attributions_lgc, input.shape[2:])
    print(attributions_lgc.shape)
    print(upsamp_attr_lgc.shape)
    print(input.shape)
    save(
        viz.visualize_image_attr_multiple(
            upsamp_attr_lgc[0].cpu().permute(1, 2, 0).detach().numpy(),
            transformed_img.permute(1, 2, 0).numpy(),
            ["original_image", "blended_heat_map", "masked_image"],
            ["all", "positive", "positive"],
            show_colorbar=True,
            titles=["Original", "Positive Attribution", "Masked"],
            fig_size=(18, 6),
        ),
        "5_layer_gradcam_upsampled",
    )

    start = time.perf_counter()
    occlusion = Occlusion(model)
    attributions_occ = occlusion.attribute(
        input, target=pred_label_idx, strides=(3, 8, 8), sliding_window_shapes=(3, 15, 15), baselines=0
    )
    timings["Occlusion"] = time.perf_counter() - start
    save(
        viz.visualize_image_attr_multiple(
            np.transpose(attributions_occ.squeeze().cpu().detach().numpy(), (1, 2, 0)),
            np.transpose(transformed_img.squeeze().cpu().detach().numpy(), (1, 2, 0)),
            ["original_image", "heat_map", "heat_map", "masked_image"],
            ["all", "positive", "negative", "positive"],
            show_colorbar=True,
            titles=["Original", "Positive Attribution", "Negative Attribution", "Masked"],
            fig_size=(18, 6),
        ),
        "6_occlusion",
    )

    for name, seconds in timings.items():
        print(f"{name:>34}: {seconds:6.2f} s")
    print(f"Saved {len(saved)} figures to {out_dir.resolve()}")
    return saved


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/article_tutorial"), help="folder for the PNGs")
    parser.add_argument("--quick", action="store_true", help="small image and few steps (smoke test)")
    args = parser.parse_args()
    main(args.out, quick=args.quick)
