//! The `troupe` binary: a thin wrapper over [`troupe::cli`].

fn main() -> anyhow::Result<()> {
    troupe::cli::main()
}
