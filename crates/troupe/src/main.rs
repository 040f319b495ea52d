//! The `troupe` binary: a thin wrapper over [`troupe::cli`].

/// mimalloc instead of glibc malloc: every request allocates (headers, JSON values, spans), and
/// glibc's free/consolidate paths showed up at ~15% of server CPU in troupe-bench profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    troupe::cli::main()
}
