#!/bin/sh
# Creates the one mailbox from the compose secret, then runs Dovecot and Postfix.
set -eu

user=${PROBE_USER:-probe@example.test}
password_file=${PROBE_PASSWORD_FILE:-/run/secrets/probe_password}
if [ ! -s "$password_file" ]; then
  echo "mailserver: no password for $user in $password_file" >&2
  exit 1
fi

# Dovecot's passwd-file: the user's password hash; uid, gid and home come from userdb's
# default_fields in dovecot.conf.
hash=$(doveadm pw -s SHA512-CRYPT -p "$(cat "$password_file")")
printf '%s:%s::::::\n' "$user" "$hash" >/etc/dovecot/users
chown root:dovecot /etc/dovecot/users
chmod 0640 /etc/dovecot/users
echo "mailserver: mailbox $user; SMTP submission on 587, IMAP on 143 (no TLS)" >&2

# Dovecot in the foreground (its log goes to the container's output), Postfix in front.
dovecot -F &
exec postfix start-fg
