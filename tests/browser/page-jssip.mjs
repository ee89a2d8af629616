// The JsSIP page (bundled by esbuild at test time: JsSIP is CommonJS). It exposes `window.phone`,
// the same small API as page-sipjs.mjs, for driver.mjs to call with page.evaluate: register,
// call, answer whatever comes in (auto-answer), hang up, send MESSAGE, read the media stats of
// a call, and a log of what happened (`phone.log()`).
import JsSIP from 'jssip';

const calls = []; // one record per session: what the driver asserts on
const messages = []; // MESSAGEs received
let ua = null;

function head(request) {
  // The request line and the headers that tell how it reached us (Via, Record-Route).
  return {
    line: String(request.data || '').split('\r\n')[0],
    via: request.getHeader('Via'),
    recordRoutes: request.getHeaders('Record-Route').length,
  };
}

function track(session, originator, request) {
  const rec = {
    id: calls.length,
    direction: originator === 'local' ? 'outgoing' : 'incoming',
    remote: session.remote_identity ? session.remote_identity.uri.toString() : '',
    request: originator === 'remote' && request ? head(request) : null,
    accepted: false,
    confirmed: false,
    ended: false,
    endedBy: null,
    cause: null,
  };
  rec.session = session;
  calls.push(rec);
  session.on('accepted', () => { rec.accepted = true; });
  session.on('confirmed', () => { rec.confirmed = true; });
  session.on('ended', (e) => {
    rec.ended = true;
    rec.endedBy = e.originator;
    rec.cause = e.cause;
  });
  session.on('failed', (e) => {
    rec.ended = true;
    rec.failed = true;
    rec.endedBy = e.originator;
    rec.cause = e.cause;
  });
  // Candidates gathered on loopback come at once: no need to wait for the gatherer's end.
  session.on('icecandidate', (e) => e.ready());
  return rec;
}

const media = { mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } };

window.phone = {
  library: `JsSIP ${JsSIP.version}`,

  register(cfg) {
    return new Promise((resolve, reject) => {
      JsSIP.debug.disable('JsSIP:*');
      const socket = new JsSIP.WebSocketInterface(cfg.server);
      ua = new JsSIP.UA({
        sockets: [socket],
        uri: cfg.uri,
        register: true,
        register_expires: 300,
        session_timers: false,
        connection_recovery_min_interval: 1,
        connection_recovery_max_interval: 2,
      });
      ua.on('registered', () => resolve({ registered: true }));
      ua.on('registrationFailed', (e) => reject(new Error(`registration failed: ${e.cause}`)));
      ua.on('newRTCSession', (e) => {
        const rec = track(e.session, e.originator, e.request);
        if (e.originator === 'remote') e.session.answer(media);
        return rec;
      });
      ua.on('newMessage', (e) => {
        if (e.originator === 'remote') {
          messages.push({
            from: e.request.from.uri.toString(),
            body: e.request.body,
            ...head(e.request),
          });
        }
      });
      ua.start();
    });
  },

  // Calls `target`; resolves when the call is confirmed (200 and our ACK), rejects when it fails.
  call(target) {
    return new Promise((resolve, reject) => {
      let rec = null;
      const session = ua.call(target, {
        ...media,
        eventHandlers: {
          confirmed: () => resolve(rec.id),
          failed: (e) => reject(new Error(`call failed: ${e.cause}`)),
        },
      });
      rec = calls.find((c) => c.session === session) || track(session, 'local', null);
    });
  },

  hangup(id) {
    calls[id].session.terminate();
  },

  sendMessage(target, body) {
    return new Promise((resolve) => {
      ua.sendMessage(target, body, {
        eventHandlers: {
          succeeded: (e) => resolve({ ok: true, status: e.response.status_code }),
          failed: (e) => resolve({ ok: false, cause: e.cause, status: e.response && e.response.status_code }),
        },
      });
    });
  },

  // Audio RTP of call `id`: bytes received and sent (getStats' inbound-rtp and outbound-rtp).
  async stats(id) {
    const pc = calls[id] && calls[id].session.connection;
    return pc ? rtpStats(pc) : null;
  },

  // The SDP the other side answered (or offered) for call `id`.
  remoteSdp(id) {
    const pc = calls[id] && calls[id].session.connection;
    return pc && pc.remoteDescription ? pc.remoteDescription.sdp : null;
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
