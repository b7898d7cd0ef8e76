# The health agent end to end: a stopped watched unit is restarted; a unit broken for good
# gets exactly 3 restarts in the hour and one escalation; the polkit rule lets the agent
# restart only the units it watches; a webhook sink that is down at first receives every
# alert once it comes up.
{ pkgs, self }:

let
  hookPort = 9999;
  # Appends every POSTed body to alerts.jsonl and answers 204.
  sink = pkgs.writeText "webhook-sink.py" ''
    import http.server
    import sys

    path = sys.argv[2]


    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with open(path, "ab") as out:
                out.write(body + b"\n")
            self.send_response(204)
            self.end_headers()


    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
  '';
  watched = {
    type = "systemd";
    interval = 1;
    timeout = 1;
    connectTimeout = 1;
    failureThreshold = 2;
    successThreshold = 1;
    remediate = { };
  };
in
pkgs.testers.runNixOSTest {
  name = "health-agent";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.health-agent ];

      services.hydra-health = {
        enable = true;
        checks = {
          demo = watched // {
            unit = "demo.service";
          };
          broken = watched // {
            unit = "broken.service";
          };
        };
        budget = {
          backoffBase = 1;
          backoffMax = 2;
        };
        alerts.webhook.url = "http://127.0.0.1:${toString hookPort}/hook";
        settings.alerts = {
          retryBase = 1;
          retryMax = 3;
        };
      };

      systemd.services.demo = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = "${pkgs.coreutils}/bin/sleep infinity";
      };
      # Fails at once, every time: no restart can help.
      systemd.services.broken = {
        serviceConfig = {
          ExecStart = "${pkgs.coreutils}/bin/false";
          Restart = "no";
        };
      };
      # Not watched: the agent must not be able to restart it.
      systemd.services.other = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = "${pkgs.coreutils}/bin/sleep infinity";
      };
      # The webhook receiver, started only late in the test.
      systemd.services.webhook-sink = {
        serviceConfig = {
          ExecStart = "${pkgs.python3.interpreter} ${sink} ${toString hookPort} /var/lib/webhook-sink/alerts.jsonl";
          StateDirectory = "webhook-sink";
        };
      };
      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
    };

  testScript = ''
    import json

    machine.wait_for_unit("hydra-health.service")
    machine.wait_for_unit("demo.service")
    machine.wait_until_succeeds(
        "curl -sf http://127.0.0.1:9446/status | jq -e '.checks.demo.state == \"up\"'"
    )
    machine.succeed("test -s /etc/hydra-health/config.json")
    # `check` exits 1 here (broken.service is down); its report still shows demo passing
    machine.succeed("hydra-health check --config /etc/hydra-health/config.json --json > /tmp/c.json || true")
    machine.succeed("jq -e '.checks.demo.ok and (.checks.broken.ok | not)' /tmp/c.json")

    agent_log = "journalctl -u hydra-health.service -o cat"

    with subtest("a stopped watched unit is restarted"):
        machine.succeed("systemctl stop demo.service")
        machine.wait_until_succeeds(
            f"{agent_log} | grep 'event=remediation ' | grep -q 'service=demo.service'",
            timeout=60,
        )
        machine.wait_for_unit("demo.service")
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9446/status | jq -e '.checks.demo.state == \"up\"'"
        )

    with subtest("a unit broken for good: 3 restarts in the hour, then one escalation"):
        machine.wait_until_succeeds(
            f"{agent_log} | grep -q 'remediation budget exhausted'", timeout=120
        )
        machine.sleep(15)  # fifteen more failing rounds change nothing
        restarts = machine.succeed(
            f"{agent_log} | grep 'event=remediation ' | grep -c 'service=broken.service'"
        ).strip()
        assert restarts == "3", f"expected 3 restarts of broken.service, got {restarts}"
        escalations = machine.succeed(f"{agent_log} | grep -c 'remediation budget exhausted'")
        assert escalations.strip() == "1", escalations
        machine.succeed(
            "curl -sf http://127.0.0.1:9446/metrics"
            " | grep 'hydra_health_remediation_budget_remaining{service=\"broken.service\"} 0.0'"
        )

    with subtest("the agent may restart only the units it watches"):
        machine.succeed(
            "runuser -u hydra-health -- systemctl --no-ask-password restart demo.service"
        )
        machine.fail("runuser -u hydra-health -- systemctl --no-ask-password restart other.service")
        machine.fail("runuser -u hydra-health -- systemctl --no-ask-password stop demo.service")

    with subtest("a webhook sink that was down receives every alert"):
        machine.succeed(f"{agent_log} | grep -q 'alert delivery failed'")
        machine.succeed("systemctl start webhook-sink.service")

        def received():
            text = machine.succeed("cat /var/lib/webhook-sink/alerts.jsonl 2>/dev/null || true")
            return [json.loads(line) for line in text.splitlines() if line.strip()]

        wanted = {
            ("HydraCheckDown", "demo", "firing"),
            ("HydraCheckDown", "demo", "resolved"),
            ("HydraCheckDown", "broken", "firing"),
            ("HydraRemediationExhausted", "broken", "firing"),
        }

        def all_arrived(_):
            got = {(a["labels"]["alertname"], a["labels"]["check"], a["status"]) for a in received()}
            return wanted <= got

        retry(all_arrived, 60)
        # and every delivery is marked done in the outbox
        machine.wait_until_succeeds(
            "hydra-health alerts --config /etc/hydra-health/config.json list | grep -q delivered"
            " && ! hydra-health alerts --config /etc/hydra-health/config.json list | grep -q pending",
            timeout=30,
        )
  '';
}
