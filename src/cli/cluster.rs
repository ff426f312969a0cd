//! `sluice cluster ...`: a node's view of its cluster.

use clap::{Args, Subcommand};

use super::NATIVE_ADDR_DEFAULT;

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    /// Server address, or a comma-separated list of them: the first that answers.
    #[arg(short = 's', long = "server", default_value = NATIVE_ADDR_DEFAULT, global = true)]
    server: String,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Show the node's peers, up or down, and its routes.
    Info,
    /// Add a node to the cluster's members. Start it first with this cluster's nodes as its
    /// routes; it takes copies of streams as they are moved to it (`sluice stream move`).
    Add { node: String },
    /// Remove a node from the cluster's members, once it holds no copy of any stream.
    Remove { node: String },
}

pub fn run(args: ClusterArgs) -> Result<(), String> {
    let client = super::connect(&args.server, "sluice-cluster")?;
    match args.command {
        ClusterCommand::Add { node } => {
            let members = client.cluster_add(&node).map_err(|e| e.to_string())?;
            println!("members: {}", members.join(","));
            Ok(())
        }
        ClusterCommand::Remove { node } => {
            let members = client.cluster_remove(&node).map_err(|e| e.to_string())?;
            println!("members: {}", members.join(","));
            Ok(())
        }
        ClusterCommand::Info => {
            let info = client.cluster_info().map_err(|e| e.to_string())?;
            if !info.clustered {
                println!("node {}: a single node, not in a cluster", info.name);
                return Ok(());
            }
            println!("node {} at {}", info.name, info.cluster_addr);
            match &info.meta {
                Some(meta) => println!(
                    "meta group  {}  leader {}  term {}  commit {}  voters {}",
                    meta.role,
                    meta.leader.as_deref().unwrap_or("none"),
                    meta.term,
                    meta.commit,
                    meta.voters.join(",")
                ),
                None => println!("meta group  not started (waiting for every route to answer)"),
            }
            for peer in &info.peers {
                let state = if peer.up { "up" } else { "down" };
                println!(
                    "peer {}  {}  {} for {:.1}s  links {}",
                    peer.name,
                    peer.addr,
                    state,
                    peer.since_ms as f64 / 1000.0,
                    peer.links
                );
            }
            for route in &info.routes {
                match &route.error {
                    Some(error) => println!("route {}  {}  ({error})", route.route, route.state),
                    None => println!("route {}  {}", route.route, route.state),
                }
            }
            for group in &info.groups {
                println!(
                    "group {}/{}  {}  leader {}  term {}  commit {}  lag {}  voters {}",
                    group.stream,
                    group.partition,
                    group.role,
                    group.leader.as_deref().unwrap_or("none"),
                    group.term,
                    group.commit,
                    group.last_index.saturating_sub(group.commit),
                    group.voters.join(",")
                );
            }
            Ok(())
        }
    }
}
