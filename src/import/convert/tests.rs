//! The conversion rules: ids, secret names, what is a credential where.

use super::*;

fn text(s: &str) -> Pieces {
    vec![Piece::Text(s.to_owned())]
}

fn stdio(name: &str, args: &[&str], env: &[(&str, Pieces)]) -> HostServer {
    HostServer {
        name: name.to_owned(),
        transport: Transport::Stdio {
            command: "npx".into(),
            args: args.iter().map(|a| text(a)).collect(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            cwd: None,
        },
        disabled: false,
        ignored: Vec::new(),
    }
}

fn env_of(u: &Upstream) -> &BTreeMap<String, Pieces> {
    let Transport::Stdio { env, .. } = &u.transport else { panic!("stdio") };
    env
}

fn args_of(u: &Upstream) -> &[Pieces] {
    let Transport::Stdio { args, .. } = &u.transport else { panic!("stdio") };
    args
}

#[test]
fn ids_are_what_the_config_accepts() {
    assert_eq!(sanitize("GitHub"), "github");
    assert_eq!(sanitize("githubIntegration"), "githubintegration");
    assert_eq!(sanitize("my_server.v2"), "my-server-v2");
    assert_eq!(sanitize("gateway"), "gateway-server");
    assert_eq!(sanitize("!!!"), "server");
    let long = sanitize("a-very-long-server-name-that-goes-past-the-limit");
    assert!(valid_id(&long) && long.len() <= 32, "{long}");
    let plan = Plan::new(vec![stdio("My Server", &[], &[]), stdio("my-server", &[], &[])]).unwrap();
    let ids: Vec<_> = plan.upstreams.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["my-server", "my-server-2"]);
}

#[test]
fn two_servers_api_key_get_distinct_names() {
    let servers = vec![
        stdio("weather", &[], &[("API_KEY", text("w-key")), ("KEYBOARD", text("us"))]),
        stdio("maps", &[], &[("API_KEY", text("m-key"))]),
    ];
    let plan = Plan::new(servers).unwrap();
    assert_eq!(env_of(&plan.upstreams[0])["API_KEY"], [Piece::Var("WEATHER_API_KEY".into())]);
    assert_eq!(env_of(&plan.upstreams[0])["KEYBOARD"], text("us"));
    assert_eq!(env_of(&plan.upstreams[1])["API_KEY"], [Piece::Var("MAPS_API_KEY".into())]);
    assert_eq!(plan.secrets["WEATHER_API_KEY"], "w-key");
    assert_eq!(plan.secrets["MAPS_API_KEY"], "m-key");
    assert_eq!(plan.secrets.len(), 2);
}

#[test]
fn references_stay_and_mixed_values_are_refused() {
    let servers = vec![stdio("gh", &[], &[("GITHUB_TOKEN", vec![Piece::Var("GITHUB_TOKEN".into())])])];
    let plan = Plan::new(servers).unwrap();
    assert_eq!(env_of(&plan.upstreams[0])["GITHUB_TOKEN"], [Piece::Var("GITHUB_TOKEN".into())]);
    assert!(plan.secrets.is_empty());
    let mixed = vec![Piece::Text("abc".into()), Piece::Var("X".into())];
    let err = Plan::new(vec![stdio("gh", &[], &[("GITHUB_TOKEN", mixed)])]).unwrap_err();
    assert_eq!(err.0, "gh");
    assert!(err.1.to_string().contains("env.GITHUB_TOKEN"), "{}", err.1);
}

#[test]
fn dsn_password_and_flags_in_args() {
    let args =
        ["-y", "server-postgres", "postgres://app:pw1@db:5432/orders", "--api-key", "k1", "--token=t1", "--verbose"];
    let plan = Plan::new(vec![stdio("pg", &args, &[])]).unwrap();
    let a = args_of(&plan.upstreams[0]);
    assert_eq!(
        a[2],
        [
            Piece::Text("postgres://app:".into()),
            Piece::Var("PG_POSTGRES_PASSWORD".into()),
            Piece::Text("@db:5432/orders".into())
        ]
    );
    assert_eq!(a[3], text("--api-key"));
    assert_eq!(a[4], [Piece::Var("PG_API_KEY".into())]);
    assert_eq!(a[5], [Piece::Text("--token=".into()), Piece::Var("PG_TOKEN".into())]);
    assert_eq!(a[6], text("--verbose"));
    assert_eq!(plan.secrets["PG_POSTGRES_PASSWORD"], "pw1");
    assert_eq!(plan.secrets["PG_API_KEY"], "k1");
    assert_eq!(plan.secrets["PG_TOKEN"], "t1");
}

#[test]
fn url_query_token_and_authorization_header() {
    let server = HostServer {
        name: "Remote API".into(),
        transport: Transport::Http {
            url: text("https://mcp.example.com/sse?token=q1&region=eu"),
            headers: [
                ("Authorization".to_owned(), text("Bearer b1")),
                ("X-Api-Key".to_owned(), text("x1")),
                ("Accept".to_owned(), text("application/json")),
            ]
            .into(),
            sse: true,
        },
        disabled: false,
        ignored: Vec::new(),
    };
    let plan = Plan::new(vec![server]).unwrap();
    let Transport::Http { url, headers, .. } = &plan.upstreams[0].transport else { panic!() };
    assert_eq!(plan.upstreams[0].id, "remote-api");
    assert_eq!(
        *url,
        [
            Piece::Text("https://mcp.example.com/sse?token=".into()),
            Piece::Var("REMOTE_API_TOKEN".into()),
            Piece::Text("&region=eu".into())
        ]
    );
    assert_eq!(
        headers["Authorization"],
        [Piece::Text("Bearer ".into()), Piece::Var("REMOTE_API_AUTHORIZATION".into())]
    );
    assert_eq!(headers["X-Api-Key"], [Piece::Var("REMOTE_API_X_API_KEY".into())]);
    assert_eq!(headers["Accept"], text("application/json"));
    assert_eq!(plan.secrets["REMOTE_API_AUTHORIZATION"], "b1");
    assert_eq!(plan.secrets["REMOTE_API_TOKEN"], "q1");
    assert_eq!(plan.secrets["REMOTE_API_X_API_KEY"], "x1");
}

#[test]
fn env_dsn_password_is_named_after_the_variable() {
    let plan = Plan::new(vec![stdio(
        "db",
        &[],
        &[("DATABASE_URL", text("postgres://u:pw@h/db")), ("DB_PASSWORD", text("p2"))],
    )])
    .unwrap();
    assert_eq!(plan.secrets["DB_DATABASE_URL_PASSWORD"], "pw");
    assert_eq!(plan.secrets["DB_DB_PASSWORD"], "p2");
}
