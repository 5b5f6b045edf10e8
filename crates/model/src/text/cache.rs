//! The key/value cache of incremental decoding: one preallocated [B, Hkv, capacity, D] buffer
//! pair per layer, filled left to right, so a decode step copies only the new column.

use tch::{Device, Kind, Tensor};

use crate::config::TextConfig;

#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: i64,
    capacity: i64,
}

impl KvCache {
    pub fn new(c: &TextConfig, batch: i64, capacity: i64, kind: Kind, device: Device) -> Self {
        let shape = [batch, c.num_key_value_heads, capacity, c.head_dim];
        let layers = (0..c.num_hidden_layers)
            .map(|_| (Tensor::zeros(shape, (kind, device)), Tensor::zeros(shape, (kind, device))))
            .collect();
        KvCache { layers, len: 0, capacity }
    }

    /// Tokens already cached (the same for every row: padding is part of the cache).
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Store the new k, v [B, Hkv, n, D] of `layer` after the cached ones and return the whole
    /// cached prefix including them. [`KvCache::advance`] commits the step once all layers ran.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let n = k.size()[2];
        let (ck, cv) = &mut self.layers[layer];
        ck.narrow(2, self.len, n).copy_(k);
        cv.narrow(2, self.len, n).copy_(v);
        (ck.narrow(2, 0, self.len + n), cv.narrow(2, 0, self.len + n))
    }

    pub(crate) fn advance(&mut self, n: i64) {
        self.len += n;
    }
}
