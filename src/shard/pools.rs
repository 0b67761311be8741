//! The FastCGI pool split across shards: `fpm.pool_size` connections in
//! all, each shard owning its share, so an event's round trip runs on its
//! connection's thread and a FastCGI socket is registered with one shard's
//! runtime only. With the shared runtime there is one share: the whole pool.
//!
//! [`FpmShards`] dereferences to the calling shard's pool (threads outside
//! the shards use the first), so an event calls `ctx.fpm.call(…)` as
//! before; what concerns the whole pool (counts, reaping, closing, a
//! reload's new timeouts) goes to every share.

use std::ops::Deref;

use crate::config::FpmConfig;
use crate::drain;
use crate::fpm::FpmPool;

/// One pool per shard.
pub struct FpmShards {
    pools: Vec<FpmPool>,
}

impl FpmShards {
    /// `config.pool_size` connections split across `shards` pools (the
    /// first ones get one more when it does not divide evenly).
    pub fn new(config: &FpmConfig, shards: usize, drain: &drain::Clock) -> Self {
        let pools = FpmPool::split(
            config,
            &share_sizes(config.pool_size, shards),
            drain.clone(),
        );
        Self { pools }
    }

    /// Every share.
    pub fn shares(&self) -> &[FpmPool] {
        &self.pools
    }

    /// Takes new timeouts and limits (a reload) in every share.
    pub fn update(&self, config: &FpmConfig) {
        for pool in &self.pools {
            pool.update(config);
        }
    }

    /// Closes idle connections past `fpm.idle_timeout` in every share.
    pub fn reap_idle(&self) {
        self.pools.iter().for_each(FpmPool::reap_idle);
    }

    /// Closes every idle connection of every share.
    pub fn close_idle(&self) {
        self.pools.iter().for_each(FpmPool::close_idle);
    }

    /// Idle connections in all shares.
    pub fn idle_count(&self) -> usize {
        self.pools.iter().map(FpmPool::idle_count).sum()
    }

    /// Slots taken by a running request in all shares.
    pub fn busy_count(&self) -> usize {
        self.pools.iter().map(FpmPool::busy_count).sum()
    }
}

/// The sizes of `pool_size` split across `shards` (at most one share per
/// connection, so never a share of 0).
fn share_sizes(pool_size: usize, shards: usize) -> Vec<usize> {
    let shards = shards.clamp(1, pool_size.max(1));
    (0..shards)
        .map(|i| pool_size / shards + usize::from(i < pool_size % shards))
        .collect()
}

impl Deref for FpmShards {
    type Target = FpmPool;

    /// The calling shard's pool.
    fn deref(&self) -> &FpmPool {
        &self.pools[super::current().min(self.pools.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_split_without_losing_a_slot() {
        assert_eq!(share_sizes(8, 1), [8]);
        assert_eq!(share_sizes(8, 2), [4, 4]);
        assert_eq!(share_sizes(8, 3), [3, 3, 2]);
        assert_eq!(
            share_sizes(2, 4),
            [1, 1],
            "never a share without a connection"
        );
        let shards = FpmShards::new(
            &FpmConfig {
                pool_size: 5,
                ..FpmConfig::default()
            },
            2,
            &drain::Clock::default(),
        );
        assert_eq!(shards.shares().len(), 2);
        assert_eq!(shards.busy_count(), 0);
    }
}
