use std::process::ExitCode;

use billing_app::{Settings, dead_letters, startup};

fn main() -> ExitCode {
    common::cli::Service {
        name: "billing-app",
        settings: Settings::from_env,
        listen: |settings| settings.listen,
        serve: startup::serve,
        commands: &[dead_letters::COMMAND],
    }
    .main()
}
