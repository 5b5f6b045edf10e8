//! Where every patch sits: the order patches arrive in (merge-block order), their full-resolution
//! (row, col), the bilinear taps into the learned square position table, and the per-frame
//! attention segments. All of it depends only on the image grids, so it is computed on the host.

use tch::{Device, Kind, Tensor};

use crate::config::VisionConfig;

/// Per-patch geometry for a batch of images, in the order the patch rows arrive.
#[derive(Debug)]
pub struct PatchLayout {
    /// (row, col) of each patch in its frame.
    rows_cols: Vec<[i64; 2]>,
    /// Height and width (patches) of each patch's image.
    sizes: Vec<[i64; 2]>,
    /// Frame boundaries: attention is non-causal within a frame and absent across frames.
    pub cu_seqlens: Vec<i64>,
    side: i64,
}

impl PatchLayout {
    pub fn new(grid_thw: &[[i64; 3]], c: &VisionConfig) -> Self {
        let m = c.spatial_merge_size;
        let mut rows_cols = Vec::new();
        let mut sizes = Vec::new();
        let mut cu_seqlens = vec![0];
        for &[t, h, w] in grid_thw {
            for _ in 0..t {
                // Merge-block order: block row, block column, then the m×m patches inside.
                for br in 0..h / m {
                    for bc in 0..w / m {
                        for ir in 0..m {
                            for ic in 0..m {
                                rows_cols.push([br * m + ir, bc * m + ic]);
                                sizes.push([h, w]);
                            }
                        }
                    }
                }
                let last = cu_seqlens.last().copied().unwrap_or(0);
                cu_seqlens.push(last + h * w);
            }
        }
        let side = (c.num_position_embeddings as f64).sqrt().round() as i64;
        PatchLayout { rows_cols, sizes, cu_seqlens, side }
    }

    /// [N, 2] int64 (row, col), the vision rotary's positions.
    pub fn rows_cols(&self, device: Device) -> Tensor {
        let flat: Vec<i64> = self.rows_cols.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([-1, 2]).to_device(device)
    }

    /// Bilinear resampling of the side×side table to each image grid (align-corners): for every
    /// patch the 4 table rows [N, 4] int64 and their weights [N, 4] fp32, ordered
    /// (r0c0, r0c1, r1c0, r1c1). Arithmetic is fp32 in the same order as transformers.
    pub fn interpolation(&self, device: Device) -> (Tensor, Tensor) {
        let side = self.side;
        let axis = |i: i64, size: i64| -> ([i64; 2], [f32; 2]) {
            let src = i as f32 * (side - 1) as f32 / (size - 1).max(1) as f32;
            let floor = src.floor();
            let mut taps = [0i64; 2];
            let mut weights = [0f32; 2];
            for (o, (tap, wt)) in taps.iter_mut().zip(weights.iter_mut()).enumerate() {
                *tap = (floor as i64 + o as i64).clamp(0, side - 1);
                *wt = (1.0 - (src - floor - o as f32).abs()).max(0.0);
            }
            (taps, weights)
        };
        let mut idx = Vec::with_capacity(self.rows_cols.len() * 4);
        let mut wts = Vec::with_capacity(self.rows_cols.len() * 4);
        for (&[r, c], &[h, w]) in self.rows_cols.iter().zip(&self.sizes) {
            let (rt, rw) = axis(r, h);
            let (ct, cw) = axis(c, w);
            for a in 0..2 {
                for b in 0..2 {
                    idx.push(rt[a] * side + ct[b]);
                    wts.push(rw[a] * cw[b]);
                }
            }
        }
        (
            Tensor::from_slice(&idx).view([-1, 4]).to_device(device),
            Tensor::from_slice(&wts).view([-1, 4]).to_kind(Kind::Float).to_device(device),
        )
    }
}
