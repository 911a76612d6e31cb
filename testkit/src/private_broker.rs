//! A RabbitMQ node that one test owns, so that the test can kill, freeze and restart it
//! without touching the shared broker on 127.0.0.1:5672.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::amqp::{self, BrokerSettings, Node};

use crate::TestQueue;
use crate::os;

/// Where the machine's RabbitMQ scripts are (Debian's layout), unless
/// `TESTKIT_RABBITMQ_BIN` says otherwise. These scripts, not the `/usr/sbin` wrappers, which
/// switch to the `rabbitmq` user and its data directory.
const DEFAULT_BIN: &str = "/usr/lib/rabbitmq/bin";

/// How long a node may take to boot: a few seconds normally, much more on a loaded machine.
const BOOT_LIMIT: Duration = Duration::from_secs(90);

/// A private RabbitMQ node: its own node name, AMQP port, distribution port and data
/// directory in a scratch directory; no plugins, so it opens no other port.
///
/// The server runs as a child of the test process (and dies with it). Dropping this value
/// kills the node and removes its directory. The built-in `guest` account works, since
/// clients connect from the same machine.
pub struct PrivateBroker {
    node: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    server: Option<Child>,
}

impl PrivateBroker {
    /// Boots a fresh node and waits until it accepts AMQP connections.
    pub async fn start() -> Self {
        let dir = os::scratch_dir("testkit-rabbitmq");
        let (port, dist_port) = os::free_ports();
        let mut broker = Self {
            node: format!("testkit-{}@localhost", uuid::Uuid::new_v4().simple()),
            port,
            dist_port,
            dir,
            server: None,
        };
        broker.write_files();
        // A free port can be taken between choosing it and the node binding it: then the
        // node exits at once, and another pair of ports is tried.
        for attempt in 1..=3 {
            broker.launch();
            match broker.wait_booted().await {
                Ok(()) => return broker,
                Err(failure) if attempt < 3 && broker.exited() => {
                    eprintln!("testkit: RabbitMQ node failed to start ({failure}); new ports");
                    (broker.port, broker.dist_port) = os::free_ports();
                    broker.write_files();
                }
                Err(failure) => panic!("{failure}\n{}", broker.log()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The AMQP port, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Erlang node name, e.g. `testkit-0123…@localhost`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's scratch directory (data, logs, configuration).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pid of the node's `beam.smp`, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Settings a service uses to reach this node and `queue`.
    pub fn settings(&self, queue: &str) -> BrokerSettings {
        BrokerSettings::single(Node::new("127.0.0.1", self.port), "guest", "guest", queue)
    }

    /// The same as `RABBITMQ_*` variables, for a service started as a process.
    pub fn env(&self, queue: &str) -> Vec<(String, String)> {
        let settings = self.settings(queue);
        vec![
            ("RABBITMQ_HOST".into(), "127.0.0.1".into()),
            ("RABBITMQ_PORT".into(), self.port.to_string()),
            ("RABBITMQ_USER".into(), settings.user),
            ("RABBITMQ_PASSWORD".into(), settings.password),
            ("RABBITMQ_QUEUE".into(), settings.queue),
        ]
    }

    /// A fresh test queue on this node (declare, publish, count, as on the shared broker).
    pub fn queue(&self) -> TestQueue {
        TestQueue::on_port(self.port)
    }

    /// SIGKILL: the node dies at once, with no chance to flush or close anything; what it
    /// had confirmed must survive on disk. Waits until the process is gone.
    pub async fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            os::signal(server.id(), libc::SIGKILL);
            os::wait_exit(&mut server, Duration::from_secs(30))
                .await
                .expect("a SIGKILLed node exits");
        }
    }

    /// SIGSTOP: the node stops doing anything, while its sockets stay open (the kernel keeps
    /// accepting connections and buffering bytes): a hung broker, not a dead one. Returns
    /// once all its threads have stopped, so that nothing sent afterwards can be answered.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            assert!(os::signal(pid, libc::SIGSTOP), "SIGSTOP the node");
            assert!(
                os::wait_stopped(pid, Duration::from_secs(5)),
                "the node's threads stop within 5 s of SIGSTOP"
            );
        }
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            assert!(os::signal(pid, libc::SIGCONT), "SIGCONT the node");
        }
    }

    /// Starts the node again on the same data directory and ports (killing it first if it
    /// still runs), and waits until it accepts AMQP connections. Durable queues and their
    /// persistent messages are still there.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch();
        if let Err(failure) = self.wait_booted().await {
            panic!("restarting the node: {failure}\n{}", self.log());
        }
    }

    /// Starts the node's process and returns at once, without waiting for it to boot (see
    /// [`Self::wait_until_answering`]); does nothing if it runs already.
    pub fn launch(&mut self) {
        if self.server.is_some() {
            return;
        }
        let (stdout, stderr) = os::append_log(&self.dir.join("console.log"));
        let mut command = Command::new(Path::new(&bin_dir()).join("rabbitmq-server"));
        command
            .env_clear()
            .envs(self.env_vars())
            // rabbitmq-server normally runs the VM as a background job of a shell that
            // relays signals. With `detached` set, it `exec`s the VM instead: the child is
            // then beam.smp itself, so our signals reach the server, and it dies with us.
            .env("detached", "true")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        os::die_with_parent(&mut command, libc::SIGKILL);
        let server = command
            .spawn()
            .unwrap_or_else(|err| panic!("run {}/rabbitmq-server: {err}", bin_dir()));
        self.server = Some(server);
    }

    /// Whether the node completes an AMQP handshake now (the listener opens last in boot,
    /// so this means the node is fully up).
    pub async fn answers(&self) -> bool {
        match amqp::connect(&self.settings("unused"), "testkit-probe").await {
            Ok(connection) => {
                let _ = connection.close(200, "probe".into()).await;
                true
            }
            Err(_) => false,
        }
    }

    /// Polls every 50 ms until the node answers AMQP; panics after `limit`.
    pub async fn wait_until_answering(&self, limit: Duration) {
        crate::eventually(limit, "the private RabbitMQ node answers AMQP", || {
            self.answers()
        })
        .await;
    }

    /// Runs `rabbitmqctl -n NODE ARGS...` against this node: its standard output when it
    /// succeeds, or everything it printed when it fails.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> Result<String, String> {
        let output = tokio::process::Command::new(Path::new(&bin_dir()).join("rabbitmqctl"))
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .env_clear()
            .envs(self.env_vars())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .map_err(|_| format!("rabbitmqctl {args:?} did not finish within 60 s"))?
            .map_err(|err| format!("run rabbitmqctl: {err}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "rabbitmqctl {args:?}: {}\n{stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Writes the node's DETS tables to disk now.
    ///
    /// Why: Ra, the Raft library behind quorum queues in RabbitMQ 3.10, records which queues
    /// exist in a DETS table that it saves only after 500 ms without access. A quorum queue
    /// declared just before a SIGKILL can therefore be forgotten by the restarted node: its
    /// messages are on disk, but the queue never elects a leader and looks empty. Call this
    /// after the queues are declared and before [`Self::kill`] to test what a crash does to
    /// an established queue (the production case) rather than to one a moment old.
    pub async fn sync_metadata(&self) {
        let synced = self
            .rabbitmqctl(&["eval", "[dets:sync(Table) || Table <- dets:all()]."])
            .await
            .unwrap_or_else(|err| panic!("sync the node's DETS tables: {err}"));
        assert!(!synced.contains("error"), "dets:sync failed: {synced}");
    }

    /// The end of the node's log and console output, for failure messages.
    pub fn log(&self) -> String {
        format!(
            "{}\n{}",
            os::tail(&self.dir.join("console.log"), 4000),
            os::tail(
                &self.dir.join("log").join(format!("{}.log", self.node)),
                8000
            )
        )
    }

    fn exited(&mut self) -> bool {
        match self.server.as_mut().map(Child::try_wait) {
            Some(Ok(Some(_))) => {
                self.server = None;
                true
            }
            _ => false,
        }
    }

    /// Waits until the node answers AMQP, or fails early if its process exits.
    async fn wait_booted(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + BOOT_LIMIT;
        let mut checked_pid = false;
        loop {
            if let Some(server) = self.server.as_mut()
                && let Ok(Some(status)) = server.try_wait()
            {
                self.server = None;
                return Err(format!("the RabbitMQ node exited during boot: {status}"));
            }
            if !checked_pid && let Some(pid) = self.pid() {
                // The scripts exec into the VM within moments; signalling anything else
                // would kill a shell and leave the node running.
                checked_pid = os::command_name(pid).as_deref() == Some("beam.smp");
            }
            if self.answers().await {
                assert!(
                    checked_pid,
                    "rabbitmq-server did not exec into beam.smp; signals would miss the node"
                );
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the RabbitMQ node did not boot within {BOOT_LIMIT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node's whole environment: everything under its scratch directory, nothing read
    /// from /etc/rabbitmq (whose env file would name the shared node).
    fn env_vars(&self) -> Vec<(String, String)> {
        let path = |name: &str| self.dir.join(name).display().to_string();
        let mut vars = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            // The Erlang cookie is read from $HOME; the CLI tools need UTF-8.
            ("HOME".to_owned(), path("home")),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("LC_ALL".to_owned(), "C.UTF-8".to_owned()),
            ("RABBITMQ_NODENAME".to_owned(), self.node.clone()),
            ("RABBITMQ_DIST_PORT".to_owned(), self.dist_port.to_string()),
            (
                "RABBITMQ_CONF_ENV_FILE".to_owned(),
                path("rabbitmq-env.conf"),
            ),
            ("RABBITMQ_CONFIG_FILE".to_owned(), path("rabbitmq.conf")),
            (
                "RABBITMQ_ADVANCED_CONFIG_FILE".to_owned(),
                path("advanced.config"),
            ),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".to_owned(),
                path("enabled_plugins"),
            ),
            ("RABBITMQ_MNESIA_BASE".to_owned(), path("mnesia")),
            ("RABBITMQ_LOG_BASE".to_owned(), path("log")),
            (
                "RABBITMQ_PLUGINS_EXPAND_DIR".to_owned(),
                path("plugins-expand"),
            ),
            ("RABBITMQ_PLUGINS_DIR".to_owned(), path("plugins")),
            // Only if no epmd runs yet: the one it starts then listens on loopback only.
            ("ERL_EPMD_ADDRESS".to_owned(), "127.0.0.1".to_owned()),
            // Distribution (for rabbitmqctl) on loopback only.
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".to_owned(),
                "-kernel inet_dist_use_interface {127,0,0,1}".to_owned(),
            ),
        ];
        if let Ok(epmd_port) = std::env::var("ERL_EPMD_PORT") {
            vars.push(("ERL_EPMD_PORT".to_owned(), epmd_port));
        }
        vars
    }

    /// Configuration files: AMQP on loopback at our port, no plugins, our own cookie.
    fn write_files(&self) {
        let write = |name: &str, contents: &str| {
            let path = self.dir.join(name);
            fs::write(&path, contents)
                .unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        };
        write(
            "rabbitmq.conf",
            &format!("listeners.tcp.local = 127.0.0.1:{}\n", self.port),
        );
        write("rabbitmq-env.conf", "");
        write("enabled_plugins", "[].\n");
        let plugins = self.dir.join("plugins");
        if !plugins.exists() {
            let source = rabbitmq_home().join("plugins");
            link_core_apps(&source, &plugins).unwrap_or_else(|err| {
                panic!("link RabbitMQ's core apps from {}: {err}", source.display())
            });
        }
        let cookie = self.dir.join("home").join(".erlang.cookie");
        if !cookie.exists() {
            fs::create_dir_all(self.dir.join("home")).expect("create the node's home");
            write(
                "home/.erlang.cookie",
                &uuid::Uuid::new_v4().simple().to_string(),
            );
            // Erlang refuses a cookie file that others can read.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&cookie, fs::Permissions::from_mode(0o400))
                .expect("restrict the cookie file");
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            os::signal(server.id(), libc::SIGKILL);
            if os::wait_exit_blocking(&mut server, Duration::from_secs(10)).is_none() {
                eprintln!("warning: a private RabbitMQ node did not exit after SIGKILL");
            }
        }
        os::remove_dir(&self.dir);
    }
}

/// The RabbitMQ installation the scripts in [`bin_dir`] belong to (they are symlinks into it).
fn rabbitmq_home() -> PathBuf {
    let script = Path::new(&bin_dir()).join("rabbitmq-server");
    let real = fs::canonicalize(&script).unwrap_or_else(|err| {
        panic!(
            "private RabbitMQ nodes need {} ({err}): install Debian's rabbitmq-server, or set \
             TESTKIT_RABBITMQ_BIN to the directory of its scripts",
            script.display()
        )
    });
    real.parent()
        .and_then(Path::parent)
        .expect("rabbitmq-server lives in <RABBITMQ_HOME>/sbin")
        .to_owned()
}

/// Fills `target` with symlinks to the apps of `source` (RabbitMQ's plugins directory, which
/// also holds its core apps) that the `rabbit` app needs, following the `.app` files.
///
/// Why: at boot RabbitMQ reads the configuration schemas and scans the modules of every app
/// in its plugins directory, enabled or not; with only the ~20 core apps instead of ~70 the
/// node boots in about half the CPU time, which counts on a busy machine.
fn link_core_apps(source: &Path, target: &Path) -> std::io::Result<()> {
    let mut available = std::collections::HashMap::new();
    for entry in fs::read_dir(source)? {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        // "rabbit_common-3.10.8": app names have no '-', versions follow the first one.
        if let Some((app, _version)) = file_name.split_once('-') {
            available.insert(app.to_owned(), entry.path());
        }
    }
    fs::create_dir_all(target)?;
    let mut needed = vec!["rabbit".to_owned()];
    let mut linked = std::collections::HashSet::new();
    while let Some(app) = needed.pop() {
        // Apps not found here (kernel, stdlib, ssl...) come with Erlang/OTP.
        let Some(dir) = available.get(&app) else {
            continue;
        };
        if !linked.insert(app.clone()) {
            continue;
        }
        let spec = fs::read_to_string(dir.join("ebin").join(format!("{app}.app")))?;
        needed.extend(app_dependencies(&spec));
        let name = dir.file_name().expect("a directory entry has a name");
        std::os::unix::fs::symlink(dir, target.join(name))?;
    }
    if linked.contains("rabbit") {
        Ok(())
    } else {
        Err(std::io::Error::other("no rabbit app there"))
    }
}

/// The apps listed in an `.app` file's `applications` and `included_applications`.
fn app_dependencies(spec: &str) -> Vec<String> {
    let mut apps = Vec::new();
    for key in ["{applications", "{included_applications"] {
        let Some((_, rest)) = spec.split_once(key) else {
            continue;
        };
        let Some(list) = rest
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list)
        else {
            continue;
        };
        apps.extend(
            list.split(',')
                .map(|app| app.trim().trim_matches('\'').to_owned())
                .filter(|app| !app.is_empty()),
        );
    }
    apps
}

fn bin_dir() -> String {
    std::env::var("TESTKIT_RABBITMQ_BIN").unwrap_or_else(|_| DEFAULT_BIN.to_owned())
}
