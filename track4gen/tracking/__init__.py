"""Zero-shot point tracking with a video diffusion UNet's features (Track4Gen Sec. 3.2, 4.3.1, Table 2).

- `matching`: pure tensor code: query features, cosine matching, soft-argmax, occlusion rule;
- `features`: one UNet pass per 24-frame segment with a hook on a named block (App. A.4 segments);
- `models`: what `--model` may name (base SVD, exported Track4Gen, training checkpoint);
- `evaluate`: tracking a video, scoring against TAP-Vid / npz ground truth, Table 2's table, pictures.
"""
