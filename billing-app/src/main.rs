use std::process::ExitCode;

use billing_app::{Settings, startup};
use common::config::Env;
use common::{shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let env = Env::from_process();
    telemetry::init(&env);
    let settings = match Settings::from_env(&env) {
        Ok(settings) => settings,
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::FAILURE;
        }
    };
    match startup::run(settings, shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("billing-app stopped: {err}");
            ExitCode::FAILURE
        }
    }
}
