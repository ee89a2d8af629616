// The SIP.js page (bundled by esbuild at test time). The same `window.phone` API as
// page-jssip.mjs: register, call, auto-answer, hang up, MESSAGE, media stats, a log.
import {
  Inviter,
  Messager,
  Registerer,
  SessionState,
  UserAgent,
  version,
} from 'sip.js';

const calls = [];
const messages = [];
let ua = null;

function head(request) {
  return {
    line: String(request.data || '').split('\r\n')[0],
    via: request.getHeader('via'),
    recordRoutes: request.getHeaders('record-route').length,
  };
}

function track(session, direction, request) {
  const rec = {
    id: calls.length,
    direction,
    remote: session.remoteIdentity ? session.remoteIdentity.uri.toString() : '',
    request: request ? head(request) : null,
    accepted: false,
    confirmed: false,
    ended: false,
    endedBy: null,
    cause: null,
  };
  rec.session = session;
  calls.push(rec);
  session.delegate = {
    onBye(bye) {
      rec.endedBy = 'remote';
      rec.cause = 'BYE';
      bye.accept();
    },
  };
  session.stateChange.addListener((state) => {
    if (state === SessionState.Established) {
      rec.accepted = true;
      rec.confirmed = true;
    }
    if (state === SessionState.Terminated) {
      rec.ended = true;
      if (!rec.endedBy) {
        rec.endedBy = rec.hungUp ? 'local' : 'remote';
        rec.cause = rec.hungUp ? 'BYE' : 'terminated';
      }
    }
  });
  return rec;
}

const sdhOptions = { constraints: { audio: true, video: false } };

window.phone = {
  library: `SIP.js ${version}`,

  async register(cfg) {
    ua = new UserAgent({
      uri: UserAgent.makeURI(cfg.uri),
      transportOptions: { server: cfg.server },
      logLevel: 'warn',
      sessionDescriptionHandlerFactoryOptions: {
        peerConnectionConfiguration: { iceServers: [] },
        // Loopback candidates come at once; the gatherer's own end is not waited for longer.
        iceGatheringTimeout: 500,
      },
      delegate: {
        onInvite(invitation) {
          track(invitation, 'incoming', invitation.request);
          invitation.accept({ sessionDescriptionHandlerOptions: sdhOptions });
        },
        onMessage(message) {
          messages.push({
            from: message.request.from.uri.toString(),
            body: message.request.body,
            ...head(message.request),
          });
          message.accept();
        },
      },
    });
    await ua.start();
    const registerer = new Registerer(ua, { expires: 300 });
    return new Promise((resolve, reject) => {
      registerer
        .register({
          requestDelegate: {
            onAccept: () => resolve({ registered: true }),
            onReject: (r) => reject(new Error(`registration failed: ${r.message.statusCode}`)),
          },
        })
        .catch(reject);
    });
  },

  call(target) {
    const inviter = new Inviter(ua, UserAgent.makeURI(target), {
      sessionDescriptionHandlerOptions: sdhOptions,
    });
    const rec = track(inviter, 'outgoing', null);
    return new Promise((resolve, reject) => {
      inviter.stateChange.addListener((state) => {
        if (state === SessionState.Established) resolve(rec.id);
        if (state === SessionState.Terminated && !rec.confirmed) reject(new Error('call failed'));
      });
      inviter.invite().catch(reject);
    });
  },

  hangup(id) {
    const rec = calls[id];
    rec.hungUp = true;
    rec.endedBy = 'local';
    rec.cause = 'BYE';
    return rec.session.bye().then(() => true);
  },

  sendMessage(target, body) {
    const messager = new Messager(ua, UserAgent.makeURI(target), body);
    return new Promise((resolve) => {
      messager
        .message({
          requestDelegate: {
            onAccept: (r) => resolve({ ok: true, status: r.message.statusCode }),
            onReject: (r) => resolve({ ok: false, status: r.message.statusCode }),
          },
        })
        .catch((e) => resolve({ ok: false, cause: String(e) }));
    });
  },

  async stats(id) {
    const sdh = calls[id] && calls[id].session.sessionDescriptionHandler;
    return sdh && sdh.peerConnection ? rtpStats(sdh.peerConnection) : null;
  },

  log() {
    return {
      calls: calls.map(({ session, ...rest }) => rest),
      messages,
    };
  },
};

async function rtpStats(pc) {
  const out = { bytesReceived: 0, packetsReceived: 0, bytesSent: 0, iceState: pc.iceConnectionState };
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.bytesReceived += s.bytesReceived || 0;
      out.packetsReceived += s.packetsReceived || 0;
    }
    if (s.type === 'outbound-rtp' && s.kind === 'audio') out.bytesSent += s.bytesSent || 0;
  });
  return out;
}
