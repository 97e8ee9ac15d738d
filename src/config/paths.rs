//! Paths written in the config, made absolute against the config file's
//! folder once, at load: what the gateway compares or hands to a child
//! must not depend on how the config was named (`--config examples/x.toml`
//! gives a relative folder).

use std::path::{Component, Path, PathBuf};

/// `p` taken from `base` (the config file's folder) when relative, made
/// absolute from the current directory (which the gateway never changes)
/// when `base` is relative too, and `.`/`..` resolved lexically, as a
/// client's path is before an argument rule compares it. No disk access.
pub(crate) fn absolute(base: &Path, p: &Path) -> PathBuf {
    let joined = base.join(p);
    let mut out = PathBuf::new();
    for c in std::path::absolute(&joined).unwrap_or(joined).components() {
        match c {
            Component::ParentDir => _ = out.pop(),
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_made_absolute_from_the_config_folder_lexically() {
        assert_eq!(absolute(Path::new("/etc/gw"), Path::new("files")), Path::new("/etc/gw/files"));
        assert_eq!(absolute(Path::new("/etc/gw"), Path::new("../x/./y")), Path::new("/etc/x/y"));
        assert_eq!(absolute(Path::new("/etc/gw"), Path::new("/srv/data")), Path::new("/srv/data"));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(absolute(Path::new("examples"), Path::new("files")), cwd.join("examples/files"));
        assert_eq!(absolute(Path::new("."), Path::new("")), cwd);
    }
}
