//! A PostgreSQL cluster that one test owns, so that the test can crash, freeze and restart
//! it without touching the shared server on 127.0.0.1:5432.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::db::DatabaseSettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool};

use crate::os;

/// Where Debian installs each PostgreSQL version's binaries (`<this>/<version>/bin`).
const DEBIAN_VERSIONS: &str = "/usr/lib/postgresql";

/// PostgreSQL refuses to run as root: the cluster belongs to this OS user.
const OS_USER: &str = "postgres";

/// How long starting (including crash recovery) may take on a loaded machine.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A private PostgreSQL cluster: `initdb` in a scratch directory, the server on its own port
/// on 127.0.0.1 with its Unix socket in that directory, trust authentication, and one empty
/// database created for the test.
///
/// The server runs as a child of the test process (and stops when it dies). Dropping this
/// value stops the server and removes the directory.
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    database: String,
    owner: (u32, u32),
    server: Option<Child>,
}

impl PrivatePostgres {
    /// Creates the cluster, starts it and creates the test's database.
    pub async fn start() -> Self {
        let owner = os::account(OS_USER);
        let dir = os::scratch_dir("testkit-postgres");
        os::chown(&dir, owner);
        let mut postgres = Self {
            dir,
            port: os::free_port(),
            database: format!("test_{}", uuid::Uuid::new_v4().simple()),
            owner,
            server: None,
        };
        postgres.initdb().await;
        // A free port can be taken between choosing it and the server binding it: then the
        // server exits at once, and another port is tried.
        for attempt in 1..=3 {
            postgres.launch();
            match postgres.wait_started().await {
                Ok(()) => break,
                Err(failure) if attempt < 3 && postgres.server.is_none() => {
                    eprintln!("testkit: PostgreSQL failed to start ({failure}); new port");
                    postgres.port = os::free_port();
                }
                Err(failure) => panic!("{failure}\n{}", postgres.log()),
            }
        }
        let mut conn = PgConnection::connect_with(&postgres.server_options("postgres"))
            .await
            .expect("connect to the private PostgreSQL");
        conn.execute(AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            postgres.database
        )))
        .await
        .expect("create the test database");
        let _ = conn.close().await;
        postgres
    }

    /// The TCP port, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The name of the test's database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The cluster's scratch directory (the data directory is `data` in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Settings a service uses to reach the test's database.
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            user: OS_USER.into(),
            password: String::new(),
            name: self.database.clone(),
            pool_size: 5,
            acquire_timeout: Duration::from_secs(2),
        }
    }

    /// The same settings as `<PREFIX>_DB_*` variables, for a service started as a process.
    pub fn env(&self, prefix: &str) -> Vec<(String, String)> {
        let settings = self.settings();
        vec![
            (format!("{prefix}_DB_HOST"), settings.host),
            (format!("{prefix}_DB_PORT"), settings.port.to_string()),
            (format!("{prefix}_DB_USER"), settings.user),
            (format!("{prefix}_DB_NAME"), settings.name),
        ]
    }

    /// A small pool on the test's database, for the test's own assertions.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(self.server_options(&self.database))
            .await
            .expect("connect to the test database on the private PostgreSQL")
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, without a checkpoint,
    /// as after a crash; the next start runs crash recovery from the WAL. Waits until the
    /// server is gone.
    pub async fn stop_immediate(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        // A frozen server would never handle the signal pg_ctl sends.
        self.signal_all(server.id(), libc::SIGCONT);
        let data = self.dir.join("data");
        let mut command = self.as_owner(Command::new(bin("pg_ctl")));
        command
            .arg("stop")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "60"]);
        let output = tokio::process::Command::from(command)
            .output()
            .await
            .expect("run pg_ctl stop");
        assert!(
            output.status.success(),
            "pg_ctl stop -m immediate: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        os::wait_exit(&mut server, Duration::from_secs(30))
            .await
            .expect("the postmaster exits after pg_ctl stop");
    }

    /// Starts the server again on the same data directory and port (stopping it with
    /// [`Self::stop_immediate`] first if it still runs), and waits until it accepts
    /// connections.
    pub async fn restart(&mut self) {
        self.stop_immediate().await;
        self.launch();
        if let Err(failure) = self.wait_started().await {
            panic!("restarting PostgreSQL: {failure}\n{}", self.log());
        }
    }

    /// SIGSTOP to the postmaster and every server process: connections stay open but nothing
    /// answers, as with a hung server.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            // The postmaster first, so that it forks no new process meanwhile.
            self.signal_all(pid, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            self.signal_all(pid, libc::SIGCONT);
        }
    }

    /// Whether the server accepts a connection now.
    pub async fn answers(&self) -> bool {
        match PgConnection::connect_with(&self.server_options("postgres")).await {
            Ok(conn) => {
                let _ = conn.close().await;
                true
            }
            Err(_) => false,
        }
    }

    /// The end of the server's log, for failure messages.
    pub fn log(&self) -> String {
        os::tail(&self.dir.join("postgres.log"), 8000)
    }

    fn server_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username(OS_USER)
            .database(database)
    }

    fn as_owner(&self, mut command: Command) -> Command {
        command
            .uid(self.owner.0)
            .gid(self.owner.1)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        command
    }

    async fn initdb(&self) {
        let mut command = self.as_owner(Command::new(bin("initdb")));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            // --no-sync: a crash of the test machine is not what these tests are about.
            .args(["-U", OS_USER, "--auth=trust", "--no-sync"])
            .args(["-E", "UTF8", "--no-locale"]);
        let output = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .expect("initdb finishes within 60 s")
            .unwrap_or_else(|err| panic!("run {} (TESTKIT_POSTGRES_BIN): {err}", bin("initdb")));
        assert!(
            output.status.success(),
            "initdb: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the postmaster in the foreground as our child; returns at once.
    fn launch(&mut self) {
        if self.server.is_some() {
            return;
        }
        let (stdout, stderr) = os::append_log(&self.dir.join("postgres.log"));
        self.write_settings();
        let mut command = self.as_owner(Command::new(bin("postgres")));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .stdout(stdout)
            .stderr(stderr);
        // SIGQUIT is an immediate shutdown, which still removes the shared memory segment.
        os::die_with_parent(&mut command, libc::SIGQUIT);
        let server = command
            .spawn()
            .unwrap_or_else(|err| panic!("run {}: {err}", bin("postgres")));
        self.server = Some(server);
    }

    /// The server's settings, in `postgresql.auto.conf` (which wins over `postgresql.conf`)
    /// rather than on the command line, so that a reload finds the same values.
    fn write_settings(&self) {
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             # Small: several clusters may run at once on a small machine.\n\
             shared_buffers = '16MB'\n\
             max_connections = 50\n",
            self.port,
            self.dir.display()
        );
        let path = self.dir.join("data").join("postgresql.auto.conf");
        std::fs::write(&path, settings)
            .unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    }

    /// Waits until the server accepts connections, or fails early if it exits.
    async fn wait_started(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Some(server) = self.server.as_mut()
                && let Ok(Some(status)) = server.try_wait()
            {
                self.server = None;
                return Err(format!("PostgreSQL exited while starting: {status}"));
            }
            if self.answers().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("PostgreSQL did not start within {START_LIMIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Signals the postmaster, then its children (backends, checkpointer, ...). Each of them
    /// leads a process group of its own, so a group signal would miss them.
    fn signal_all(&self, postmaster: u32, signal: libc::c_int) {
        os::signal(postmaster, signal);
        for child in os::children(postmaster) {
            os::signal(child, signal);
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            self.signal_all(server.id(), libc::SIGCONT);
            // Immediate shutdown: quick, and it removes the shared memory segment, which a
            // SIGKILL would leave behind.
            os::signal(server.id(), libc::SIGQUIT);
            if os::wait_exit_blocking(&mut server, Duration::from_secs(10)).is_none() {
                os::signal(server.id(), libc::SIGKILL);
                let _ = os::wait_exit_blocking(&mut server, Duration::from_secs(5));
            }
        }
        os::remove_dir(&self.dir);
    }
}

/// A PostgreSQL program: from `TESTKIT_POSTGRES_BIN`, or the newest version Debian installed.
fn bin(program: &str) -> String {
    static DIR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        std::env::var("TESTKIT_POSTGRES_BIN")
            .ok()
            .or_else(newest_debian_bin)
            .unwrap_or_else(|| {
                panic!(
                    "private PostgreSQL clusters need PostgreSQL's server binaries (initdb, \
                     postgres, pg_ctl): install Debian's postgresql, or set \
                     TESTKIT_POSTGRES_BIN to their directory"
                )
            })
    });
    format!("{dir}/{program}")
}

fn newest_debian_bin() -> Option<String> {
    std::fs::read_dir(DEBIAN_VERSIONS)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin.display().to_string())
}
