use std::process::ExitCode;

use api_gateway::{Settings, startup};

/// mimalloc: measurably less time in allocation than glibc's malloc under load (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    common::cli::Service {
        name: "api-gateway",
        settings: Settings::from_env,
        port: |settings| settings.listen.port(),
        run: startup::run,
    }
    .main()
}
