use std::process::ExitCode;

use api_gateway::{Settings, startup};

fn main() -> ExitCode {
    common::cli::Service {
        name: "api-gateway",
        settings: Settings::from_env,
        listen: |settings| settings.listen,
        serve: startup::serve,
        commands: &[],
    }
    .main()
}
