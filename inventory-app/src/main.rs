use std::process::ExitCode;

use inventory_app::{Settings, startup};

/// mimalloc: measurably less time in allocation than glibc's malloc under load (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    common::cli::Service {
        name: "inventory-app",
        settings: Settings::from_env,
        port: |settings| settings.listen.port(),
        run: startup::run,
    }
    .main()
}
