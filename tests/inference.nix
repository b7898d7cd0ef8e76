# The inference module end to end: a stand-in engine that loads slowly, run by hydra-launch
# as engine "command"; its unit becomes active only once the stand-in answers, and the LiteLLM
# gateway, started after it, routes the instance's model name to it.
{ pkgs, self }:

let
  port = 8090;
  loadSeconds = 20;
  # Loads for loadSeconds, records when it became ready (CLOCK_MONOTONIC, like systemd's
  # *TimestampMonotonic), then answers /health and an OpenAI chat completion.
  standIn = pkgs.writeText "stand-in-engine.py" ''
    import http.server
    import json
    import os
    import sys
    import time

    port, delay = int(sys.argv[1]), float(sys.argv[2])
    time.sleep(delay)


    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.reply({"status": "ok"})
            else:
                self.reply({"object": "list", "data": [{"id": "stand-in", "object": "model"}]})

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            message = {"role": "assistant", "content": "hello from the stand-in"}
            self.reply({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6},
            })


    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    state = os.environ["STATE_DIRECTORY"]
    with open(os.path.join(state, "ready-at"), "w") as handle:
        handle.write(str(int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)))
    server.serve_forever()
  '';
in
pkgs.testers.runNixOSTest {
  name = "inference";

  nodes.machine =
    { ... }:
    {
      imports = [ self.nixosModules.inference ];

      services.hydra-inference = {
        enable = true;
        instances.stand-in = {
          engine = "command";
          inherit port;
          command = [
            "${pkgs.python3}/bin/python3"
            "${standIn}"
            (toString port)
            (toString loadSeconds)
          ];
          probePath = "/health";
          readiness.interval = 0.5;
        };
        gateway = {
          enable = true;
          masterKeyFile = "/run/hydra-test/master-key";
        };
      };

      # A runtime secret, outside the store, as sops-nix or agenix would leave it.
      systemd.tmpfiles.rules = [
        "d /run/hydra-test 0700 root root -"
        "f /run/hydra-test/master-key 0400 root root - sk-hydra-test"
      ];

      virtualisation.memorySize = 3072;
    };

  testScript = ''
    import json

    machine.start()

    with subtest("the instance stays activating while the stand-in loads"):
        machine.wait_until_succeeds(
            "systemctl show -P ActiveState hydra-inference-stand-in.service | grep -qx activating"
        )
        machine.fail("curl -sf http://127.0.0.1:${toString port}/health")
        machine.wait_until_succeeds(
            "systemctl show -P StatusText hydra-inference-stand-in.service | grep -q loading"
        )

    with subtest("active only after the stand-in reported ready"):
        machine.wait_for_unit("hydra-inference-stand-in.service")
        ready_at = int(machine.succeed("cat /var/lib/hydra-inference/stand-in/ready-at"))
        active_at = int(machine.succeed(
            "systemctl show -P ActiveEnterTimestampMonotonic hydra-inference-stand-in.service"
        ))
        assert active_at >= ready_at, f"active at {active_at} before ready at {ready_at}"
        machine.succeed("curl -sf http://127.0.0.1:${toString port}/health")

    with subtest("the gateway starts after the instance and routes to it"):
        machine.wait_for_unit("hydra-inference-gateway.service")
        started = int(machine.succeed(
            "systemctl show -P ExecMainStartTimestampMonotonic hydra-inference-gateway.service"
        ))
        assert started >= active_at, "gateway started before the instance was ready"
        machine.fail(
            "curl -sf http://127.0.0.1:4000/v1/models -H 'Authorization: Bearer wrong-key'"
        )
        reply = json.loads(machine.succeed(
            "curl -sf http://127.0.0.1:4000/v1/chat/completions"
            " -H 'Authorization: Bearer sk-hydra-test' -H 'Content-Type: application/json'"
            " -d '{\"model\": \"stand-in\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'"
        ))
        assert reply["choices"][0]["message"]["content"] == "hello from the stand-in", reply

    with subtest("the master key is not in the store or the generated config"):
        machine.fail("grep -rl sk-hydra-test /nix/store/*-litellm.yaml /nix/store/*-hydra-inference-*")

    with subtest("a crashed engine is restarted"):
        machine.succeed("pkill -KILL -f stand-in-engine.py")
        machine.wait_until_succeeds(
            "systemctl show -P NRestarts hydra-inference-stand-in.service | grep -qx 1"
        )
        machine.wait_for_unit("hydra-inference-stand-in.service")
  '';
}
