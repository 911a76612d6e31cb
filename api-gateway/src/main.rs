use std::process::ExitCode;

use api_gateway::{Settings, startup};

fn main() -> ExitCode {
    common::cli::Service {
        name: "api-gateway",
        settings: Settings::from_env,
        port: |settings| settings.listen.port(),
        run: startup::run,
    }
    .main()
}
