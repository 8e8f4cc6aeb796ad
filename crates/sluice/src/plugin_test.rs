//! `sluice plugin test`: run filter plugins against an envelope and a
//! message file, without a server, and show what each hook said.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use sluice_filter::authres::{
    AuthResult, AuthResults, DkimCheck, DmarcCheck, DmarcPolicy, SpfCheck,
};
use sluice_plugin_host::{PluginSpec, TestEnvelope, TestResult, test_run};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The message, as an .eml file; `-` reads standard input.
    message: PathBuf,
    /// A plugin (.wasm) to run; repeat for a chain. Without it, the chain
    /// from the configuration (or the shipped plugins) runs.
    #[arg(long = "plugin")]
    plugins: Vec<PathBuf>,
    /// JSON settings for the plugins given with --plugin.
    #[arg(long, default_value = "{}")]
    plugin_config: String,
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The reverse-path (MAIL FROM); empty for `<>`.
    #[arg(long, default_value = "")]
    mail_from: String,
    /// A forward-path (RCPT TO); repeat for several.
    #[arg(long = "rcpt", required = true)]
    rcpts: Vec<String>,
    #[arg(long, default_value = "192.0.2.1")]
    client_ip: IpAddr,
    #[arg(long, default_value = "client.example")]
    helo: String,
    /// Run as a client in `relay.trusted_networks`.
    #[arg(long)]
    trusted: bool,
    /// What SPF found for the MAIL FROM domain (`auth.spf`): pass, fail,
    /// softfail, neutral, none, temperror or permerror.
    #[arg(long, value_parser = auth_result)]
    spf: Option<AuthResult>,
    /// A DKIM signature's result (`auth.dkim`): RESULT:DOMAIN:SELECTOR;
    /// repeat for several.
    #[arg(long, value_parser = dkim_check)]
    dkim: Vec<DkimCheck>,
    /// What DMARC found (`auth.dmarc`): RESULT:POLICY:FROM-DOMAIN, e.g.
    /// fail:reject:example.com.
    #[arg(long, value_parser = dmarc_check)]
    dmarc: Option<DmarcCheck>,
    /// ARC's result (`auth.arc`).
    #[arg(long, value_parser = auth_result)]
    arc: Option<AuthResult>,
}

fn auth_result(s: &str) -> Result<AuthResult, String> {
    AuthResult::parse(s).ok_or_else(|| {
        format!("{s:?}: use pass, fail, softfail, neutral, none, temperror or permerror")
    })
}

fn dkim_check(s: &str) -> Result<DkimCheck, String> {
    match s.splitn(3, ':').collect::<Vec<_>>()[..] {
        [result, domain, selector] => Ok(DkimCheck {
            result: auth_result(result)?,
            domain: domain.to_string(),
            selector: selector.to_string(),
        }),
        _ => Err(format!("{s:?}: use RESULT:DOMAIN:SELECTOR")),
    }
}

fn dmarc_check(s: &str) -> Result<DmarcCheck, String> {
    match s.splitn(3, ':').collect::<Vec<_>>()[..] {
        [result, policy, domain] => Ok(DmarcCheck {
            result: auth_result(result)?,
            policy: DmarcPolicy::parse(policy)
                .ok_or_else(|| format!("{policy:?}: use none, quarantine or reject"))?,
            header_from: domain.to_string(),
        }),
        _ => Err(format!("{s:?}: use RESULT:POLICY:FROM-DOMAIN")),
    }
}

/// Prints the report. Exit status: 0 when the message would be accepted, 2
/// when a stage refused it (so scripts and CI can test a plugin), 1 on errors.
pub fn run(args: TestArgs) -> ExitCode {
    match report(args) {
        Ok((text, accepted)) => {
            print!("{text}");
            if accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("sluice plugin test: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(args: TestArgs) -> Result<(String, bool), String> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let specs = if args.plugins.is_empty() {
        config.plugin_specs()?
    } else {
        serde_json::from_str::<serde_json::Value>(&args.plugin_config)
            .map_err(|e| format!("--plugin-config is not JSON: {e}"))?;
        args.plugins
            .iter()
            .map(|path| {
                let name = path
                    .file_stem()
                    .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
                PluginSpec {
                    config_json: args.plugin_config.clone(),
                    ..PluginSpec::new(name, path.clone())
                }
            })
            .collect()
    };
    let message = if args.message.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("standard input: {e}"))?;
        buf
    } else {
        std::fs::read(&args.message).map_err(|e| format!("{}: {e}", args.message.display()))?
    };
    let auth = AuthResults {
        spf_mail_from: args.spf.map(|result| SpfCheck {
            result,
            domain: args
                .mail_from
                .trim_matches(['<', '>'])
                .rsplit_once('@')
                .map_or(args.helo.clone(), |(_, d)| d.to_string()),
        }),
        dkim: args.dkim,
        dmarc: args.dmarc,
        arc: args.arc,
        ..AuthResults::default()
    };
    let envelope = TestEnvelope {
        client_ip: args.client_ip,
        helo: args.helo,
        mail_from: args.mail_from,
        rcpts: args.rcpts,
        trusted: args.trusted,
        auth,
    };
    let report =
        test_run(specs, config.host_env()?, envelope, &message).map_err(|e| e.to_string())?;
    let accepted = matches!(report.result, TestResult::Accepted(_));
    Ok((report.to_string(), accepted))
}
