//! Host servers made gateway upstreams: ids the config accepts, and every
//! credential moved out into a secret named `<UPSTREAM_ID>_<NAME>`, its
//! place in the string taken by `${<UPSTREAM_ID>_<NAME>}`.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{BUILTIN_NAMESPACE, valid_id};

use super::creds::{self, What};
use super::host::{HostServer, Piece, Pieces, Transport, join};

/// One upstream to write.
#[derive(Debug)]
pub struct Upstream {
    /// `[upstreams.<id>]`.
    pub id: String,
    /// The server's name in the host's file.
    pub from: String,
    /// Its strings, credentials replaced by references.
    pub transport: Transport,
    /// `enabled = false` when the host had it disabled.
    pub enabled: bool,
}

/// What an import writes.
#[derive(Debug, Default)]
pub struct Plan {
    /// The upstreams, in the host file's (sorted) order.
    pub upstreams: Vec<Upstream>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, String>,
}

/// A credential value the gateway cannot store on its own.
#[derive(Debug, thiserror::Error)]
#[error("{at} mixes literal text with variables in a credential; write it as one or the other")]
pub struct Mixed {
    at: String,
}

/// Auth schemes kept in front of a header's secret (`Bearer ${X}`), so
/// the secret is the token alone.
const SCHEMES: [&str; 3] = ["Bearer ", "Basic ", "Token "];

// === impl Plan ===

impl Plan {
    /// The upstreams of `servers`, their ids unique among themselves,
    /// credentials moved out. An error names the server.
    pub fn new(servers: Vec<HostServer>) -> Result<Plan, (String, Mixed)> {
        let mut plan = Plan::default();
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for s in servers {
            let id = unique_id(&sanitize(&s.name), &ids);
            ids.insert(id.clone());
            let mut cut = Cut { prefix: creds::upper_words(&id), secrets: &mut plan.secrets };
            let transport = cut.transport(s.transport).map_err(|e| (s.name.clone(), e))?;
            plan.upstreams.push(Upstream { id, from: s.name, transport, enabled: !s.disabled });
        }
        Ok(plan)
    }

    /// The ids of the plan that `taken` already has. Ids are made unique
    /// within one file; a clash with an existing config is refused, never
    /// renamed silently.
    pub fn clashes(&self, taken: &BTreeSet<String>) -> Vec<String> {
        self.upstreams.iter().filter(|u| taken.contains(&u.id)).map(|u| u.id.clone()).collect()
    }
}

/// A host's server name as an upstream id (`[a-z0-9-]{1,32}`): lower case
/// (`GitHub` → `github`), a `-` for each run of anything else, cut to 32.
/// `gateway`, the gateway's own namespace, becomes `gateway-server`.
pub fn sanitize(name: &str) -> String {
    let mut id = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .to_ascii_lowercase();
    id.truncate(32);
    let id = id.trim_end_matches('-').to_owned();
    match id.as_str() {
        "" => "server".to_owned(),
        BUILTIN_NAMESPACE => "gateway-server".to_owned(),
        _ => id,
    }
}

/// `id`, or `id-2`, `id-3`, … when two host names give the same id.
fn unique_id(id: &str, ids: &BTreeSet<String>) -> String {
    if !ids.contains(id) {
        return id.to_owned();
    }
    (2..)
        .map(|n| {
            let suffix = format!("-{n}");
            let mut base = id.to_owned();
            base.truncate(32 - suffix.len());
            format!("{}{suffix}", base.trim_end_matches('-'))
        })
        .find(|c| !ids.contains(c) && valid_id(c))
        .expect("some suffix is free")
}

/// Cutting one upstream's credentials out.
struct Cut<'a> {
    /// The upstream id's part of secret names (`my-db` → `MY_DB`).
    prefix: String,
    secrets: &'a mut BTreeMap<String, String>,
}

impl Cut<'_> {
    fn transport(&mut self, t: Transport) -> Result<Transport, Mixed> {
        Ok(match t {
            Transport::Stdio { command, args, env, cwd } => {
                let args = self.args(args)?;
                let env = env
                    .into_iter()
                    .map(|(k, v)| {
                        let v = if creds::is_credential_name(&k) {
                            self.whole(v, &k, &format!("env.{k}"))?
                        } else {
                            self.scrub(v, &creds::upper_words(&k))
                        };
                        Ok((k, v))
                    })
                    .collect::<Result<_, Mixed>>()?;
                Transport::Stdio { command, args, env, cwd }
            }
            Transport::Http { url, headers, sse } => {
                let url = self.scrub(url, "URL");
                let headers = headers
                    .into_iter()
                    .map(|(k, v)| {
                        let v = if creds::is_credential_name(&k) {
                            self.whole(v, &k, &format!("headers.{k}"))?
                        } else {
                            self.scrub(v, &creds::upper_words(&k))
                        };
                        Ok((k, v))
                    })
                    .collect::<Result<_, Mixed>>()?;
                Transport::Http { url, headers, sse }
            }
        })
    }

    /// Arguments: the value of a credential flag (`--api-key V`,
    /// `--token=V`) whole, and passwords and tokens inside URLs.
    fn args(&mut self, args: Vec<Pieces>) -> Result<Vec<Pieces>, Mixed> {
        let mut out: Vec<Pieces> = Vec::with_capacity(args.len());
        let mut flag: Option<String> = None;
        for (i, arg) in args.into_iter().enumerate() {
            let at = format!("args[{i}]");
            let text = match arg.as_slice() {
                [Piece::Text(t)] => Some(t.clone()),
                _ => None,
            };
            if let Some(name) = flag.take()
                && !text.as_deref().is_some_and(|t| t.starts_with('-'))
            {
                out.push(self.whole(arg, &name, &at)?);
                continue;
            }
            match arg.first() {
                Some(Piece::Text(t)) if t.starts_with('-') => {
                    let name = t.trim_start_matches('-');
                    match name.split_once('=') {
                        None if text.is_some() && creds::is_credential_name(name) => {
                            flag = Some(name.to_owned());
                            out.push(arg);
                        }
                        Some((n, value)) if creds::is_credential_name(n) => {
                            let head = t[..t.len() - value.len()].to_owned();
                            let mut rest = vec![Piece::Text(value.to_owned())];
                            rest.extend(arg[1..].iter().cloned());
                            let mut v = vec![Piece::Text(head)];
                            v.extend(self.whole(join(rest), n, &at)?);
                            out.push(join(v));
                        }
                        _ => out.push(self.scrub(arg, "")),
                    }
                }
                _ => out.push(self.scrub(arg, "")),
            }
        }
        Ok(out)
    }

    /// A value that is a credential as a whole: its literal text becomes
    /// one secret, after an auth scheme (`Bearer `) that stays in place.
    /// A value of references only is kept as it is.
    fn whole(&mut self, v: Pieces, name: &str, at: &str) -> Result<Pieces, Mixed> {
        let literal = |p: &Piece| matches!(p, Piece::Text(t) if !t.trim().is_empty());
        let (head, rest) = match v.first() {
            Some(Piece::Text(t)) => match SCHEMES.iter().find(|s| t.starts_with(**s)) {
                Some(s) => {
                    let mut rest = vec![Piece::Text(t[s.len()..].to_owned())];
                    rest.extend(v[1..].iter().cloned());
                    (Some((*s).to_owned()), join(rest))
                }
                None => (None, v.clone()),
            },
            _ => (None, v.clone()),
        };
        if !rest.iter().any(literal) {
            return Ok(v);
        }
        let [Piece::Text(secret)] = rest.as_slice() else { return Err(Mixed { at: at.to_owned() }) };
        let var = Piece::Var(self.secret(&creds::upper_words(name), secret));
        Ok(join(head.map(Piece::Text).into_iter().chain([var]).collect()))
    }

    /// Passwords in URLs and credential query parameters of `v`'s text
    /// replaced. `context` names a password's secret (`<CONTEXT>_PASSWORD`;
    /// in an argument, the URL's scheme: `POSTGRES_PASSWORD`).
    fn scrub(&mut self, v: Pieces, context: &str) -> Pieces {
        let mut out = Vec::with_capacity(v.len());
        for piece in v {
            let Piece::Text(t) = piece else {
                out.push(piece);
                continue;
            };
            let mut last = 0;
            for f in creds::find(&t) {
                out.push(Piece::Text(t[last..f.range.start].to_owned()));
                let base = match &f.what {
                    What::Password(scheme) if context.is_empty() => format!("{}_PASSWORD", creds::upper_words(scheme)),
                    What::Password(_) => format!("{context}_PASSWORD"),
                    What::Query(param) => creds::upper_words(param),
                };
                out.push(Piece::Var(self.secret(&base, &t[f.range.clone()])));
                last = f.range.end;
            }
            out.push(Piece::Text(t[last..].to_owned()));
        }
        join(out)
    }

    /// The secret `<PREFIX>_<base>` holding `value`: the same name for the
    /// same value, `_2`, `_3`, … for another value under a taken name.
    fn secret(&mut self, base: &str, value: &str) -> String {
        let stem = format!("{}_{base}", self.prefix);
        for n in 1.. {
            let name = if n == 1 { stem.clone() } else { format!("{stem}_{n}") };
            match self.secrets.get(&name) {
                None => {
                    self.secrets.insert(name.clone(), value.to_owned());
                    return name;
                }
                Some(v) if v == value => return name,
                Some(_) => {}
            }
        }
        unreachable!("some suffix is free")
    }
}

#[cfg(test)]
mod tests;
