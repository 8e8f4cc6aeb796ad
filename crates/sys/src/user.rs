//! The user the process runs as.

/// The login name of the process's effective user, from the system's user
/// database (`getpwuid_r`, so NSS sources such as LDAP count too).
///
/// `$USER` and `$LOGNAME` are set by login shells, not by systemd, cron or a
/// container's init, so they are only the fallback for a user id the
/// database does not know (an arbitrary uid in some container platforms).
pub fn current_login() -> Option<String> {
    let uid = nix::unistd::geteuid();
    let from_db = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|user| user.name)
        .filter(|name| !name.is_empty());
    from_db.or_else(|| {
        ["USER", "LOGNAME"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|s| !s.is_empty())
    })
}

/// The login name of user id `uid`, if the user database has one.
pub fn login_of(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// The user id of login `name`, if the user database has one.
pub fn uid_of(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|user| user.uid.as_raw())
}

/// The process's effective user id.
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_login_is_the_effective_users_name_whatever_the_environment() {
        let uid = nix::unistd::geteuid().as_raw();
        // `id -un` reads the same database through libc, independently.
        let expected = std::process::Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .expect("run id -un");
        assert_eq!(login_of(uid).as_deref(), Some(expected.as_str()));
        assert_eq!(uid_of(&expected), Some(uid));
        assert_eq!(current_uid(), uid);
        assert_eq!(uid_of("no-such-user-here"), None);
        assert_eq!(current_login().as_deref(), Some(expected.as_str()));
    }
}
