//! The `overhead` benchmark on jemalloc, the allocator keel's binary runs on, for both engines:
//! `cargo bench -p keel-cache --bench overhead_jemalloc -- <engine> <get|set> <ops> [threads]`.
//! A write allocates, so the allocator is part of what it costs.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "overhead.rs"]
mod overhead;

fn main() {
    overhead::main();
}
