#!/usr/bin/env bash
# Make sure the loopback services the tests use are up, starting any that is down.
# Never fails: a service that stays down makes its tests skip (or fail under CI=true).
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start() { # name port command...
  local name=$1 port=$2; shift 2
  up "$port" && return 0
  echo "== starting $name (port $port was closed)"
  "$@" >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do up "$port" && return 0; sleep 0.5; done
  echo "   $name is still down on :$port; its tests will say so"
}
start postgresql 5432 bash -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
start redis 6379 redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
start rabbitmq 5672 rabbitmq-server -detached
start mosquitto 1883 mosquitto -d -c /etc/mosquitto/mosquitto.conf
start nats 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server
start mariadb 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
exit 0
