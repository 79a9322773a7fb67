"""OpenID Connect through a real browser and a real client library: headless Chromium, driven
by Selenium, signs in on identity's own login page to two relying-party apps on loopback that
use authlib's Flask client (discovery from server_metadata_url, authorization code with PKCE
S256, state and nonce, the ID token checked against the JWKS). The first app is confidential
(a client secret), the second public (PKCE only). Asserted: the ID token's claims, the second
app's sign-in without a password (SSO cookie), logout from one app (authlib's RP-initiated
logout) ending the sign-in at both, the login page's messages (wrong password, a locked
account, a form without its CSRF cookie), prompt=login and prompt=none, two-factor sign-in with codes from pyotp (an
enrolled admin, and one the policy makes enrol on the page), and the refusals: a public client
without PKCE, a wrong code_verifier, a replayed code, an unregistered redirect URI, a disabled
app, an unregistered post-logout URI, and an app's access token at a service outside its
audience (grpcio against a real catalogue-service: UNAUTHENTICATED; the CLI's first-party token
works there). Refresh-token rotation, reuse detection, revocation and introspection through
authlib's OAuth2Session. The device flow (一码通): a terminal starts it with requests and polls
with authlib while the browser opens verification_uri_complete, signs in and approves (or, typed
by hand, denies); slow_down, access_denied, a code used once. Everything binds to 127.0.0.1 on
free ports. Run with `bash Tests/OIDC/run.sh` (identity on SQLite; on PostgreSQL with
SMARTSCHOOL_OIDC_DATABASE_URL, see oidc_support.py).
"""

import json
import logging
import os
import re
import secrets
import threading
import time
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import grpc
import jwt
import pyotp
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from authlib.integrations.requests_client import OAuth2Session
from flask import Flask, request, session
from markupsafe import escape
from selenium import webdriver
from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                        TimeoutException, WebDriverException)
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from oidc_support import Cli, ServiceProcess, serve, serve_identity

ADMIN_PASSWORD = "Browser-admin-42"
CHROMIUM = os.environ.get("SMARTSCHOOL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SMARTSCHOOL_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 20      # seconds a page may take to show what a step waits for
TIMEOUT = 10   # seconds of any HTTP request the apps or the test make

logging.getLogger("werkzeug").setLevel(logging.ERROR)


class RelyingParty:
    """A small web app that signs its users in with OpenID Connect through authlib's Flask
    client, served on 127.0.0.1 by werkzeug. It records what it asked for and what it got."""

    def __init__(self, name):
        self.name = name
        self.flask = Flask(name)
        self.flask.secret_key = secrets.token_bytes(16)
        # Cookies do not tell ports apart: each app on 127.0.0.1 needs its own cookie name.
        self.flask.config["SESSION_COOKIE_NAME"] = "rp_%s_session" % name
        self.oauth = OAuth(self.flask)
        self.server = make_server("127.0.0.1", 0, self.flask, threaded=True)
        self.base = "http://127.0.0.1:%d" % self.server.server_port
        self.redirect_uri = self.base + "/callback"
        self.capture_uri = self.base + "/capture"
        self.signed_out_uri = self.base + "/signed-out"
        self.requests = {}    # state -> the authorization request's parameters
        self.sign_ins = []    # what the callback got: ID token claims, userinfo, tokens
        self.errors = []      # (error, description) the callback was sent or met
        self.captured = []    # query parameters sent to /capture (codes left unredeemed)
        self.client_id = None
        self._routes()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def register(self, issuer, client_id, client_secret, scope="openid profile"):
        """Points authlib at identity's discovery document. `client_secret` None: a public
        client, which authenticates with nothing but PKCE. The `nopkce` registration is the
        same client without PKCE, which identity must refuse for a public client."""
        self.client_id = client_id
        auth = {} if client_secret else {"token_endpoint_auth_method": "none"}
        common = dict(client_id=client_id, client_secret=client_secret,
                      server_metadata_url=issuer + "/.well-known/openid-configuration")
        self.oauth.register(
            "identity", **common,
            client_kwargs=dict(scope=scope, code_challenge_method="S256",
                               default_timeout=TIMEOUT, **auth))
        self.oauth.register(
            "nopkce", **common,
            client_kwargs=dict(scope=scope, default_timeout=TIMEOUT, **auth))

    def _routes(self):
        app = self.flask

        @app.get("/login")
        def login():
            via = request.args.get("via", "identity")
            session["via"] = via
            extra = {k: request.args[k] for k in ("prompt", "max_age") if k in request.args}
            response = self.oauth.create_client(via).authorize_redirect(self.redirect_uri,
                                                                        **extra)
            asked = parse_qs(urlsplit(response.headers["Location"]).query)
            self.requests[asked["state"][0]] = {k: v[0] for k, v in asked.items()}
            return response

        @app.get("/callback")
        def callback():
            client = self.oauth.create_client(session.get("via", "identity"))
            try:
                token = client.authorize_access_token()
            except OAuthError as error:
                self.errors.append((error.error, error.description))
                return ('<h1 id="sign-in-failed">%s</h1><p id="description">%s</p>'
                        % (escape(error.error), escape(error.description or "")), 400)
            claims = dict(token["userinfo"])
            session["id_token"] = token["id_token"]
            self.sign_ins.append({"state": request.args["state"], "claims": claims,
                                  "userinfo": dict(client.userinfo(token=token)),
                                  "token": token})
            return '<h1 id="signed-in">%s</h1>' % escape(claims.get("preferred_username", ""))

        @app.get("/logout")
        def logout():
            # RP-initiated logout: identity ends the sign-in and sends the browser back here.
            return self.oauth.create_client("identity").logout_redirect(
                post_logout_redirect_uri=self.signed_out_uri,
                id_token_hint=session.pop("id_token", None))

        @app.get("/signed-out")
        def signed_out():
            try:
                self.oauth.create_client("identity").validate_logout_response()
            except OAuthError as error:
                self.errors.append((error.error, error.description))
                return '<h1 id="sign-out-failed">%s</h1>' % escape(error.description or ""), 400
            return '<h1 id="signed-out">signed out</h1>'

        @app.get("/capture")
        def capture():
            self.captured.append(request.args.to_dict())
            return '<h1 id="captured">captured</h1>'

    def stop(self):
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    # The per-account rate limit is tested in Swift; these tests sign admin in often.
    yield from serve_identity(tmp_path_factory.mktemp("identity-browser"), ADMIN_PASSWORD,
                              "--login-attempts-per-account", "0")


@pytest.fixture(scope="module")
def platform(identity, tmp_path_factory):
    """identity, the CLI logged in as admin, and the two apps registered as OIDC clients."""
    folder = tmp_path_factory.mktemp("clients")
    cli = Cli(identity, folder)
    cli.login("admin", ADMIN_PASSWORD)
    teacher, parent = RelyingParty("teacher"), RelyingParty("parent")
    try:
        profile = ["--scope", "openid", "--scope", "profile"]
        teacher_id, teacher_secret = cli.oidc_client(
            folder, "教师云 Teacher cloud", [teacher.redirect_uri], *profile,
            "--post-logout-uri", teacher.signed_out_uri)
        assert teacher_secret, "a confidential client gets a secret"
        parent_id, parent_secret = cli.oidc_client(
            folder, "家长云 Parent cloud", [parent.redirect_uri, parent.capture_uri], "--public",
            *profile, "--post-logout-uri", parent.signed_out_uri)
        assert parent_secret is None, "a public client has no secret"
        teacher.register(identity.issuer, teacher_id, teacher_secret)
        parent.register(identity.issuer, parent_id, None)
        admin_id = identity.store.admin_id()
        metadata = requests.get(identity.issuer + "/.well-known/openid-configuration",
                                timeout=TIMEOUT).json()
        yield SimpleNamespace(identity=identity, cli=cli, folder=folder, teacher=teacher,
                              teacher_secret=teacher_secret, parent=parent, admin_id=admin_id,
                              metadata=metadata)
    finally:
        teacher.stop()
        parent.stop()


@pytest.fixture(scope="module")
def chromium():
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("%s and %s are needed (Debian's chromium and chromium-driver; "
                    "Tests/OIDC/run.sh installs them)" % (CHROMIUM, CHROMEDRIVER))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--disable-extensions",
                     "--password-store=basic", "--lang=zh-CN"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"credentials_enable_service": False,
                                              "profile.password_manager_enabled": False})
    driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium):
    """The browser with no cookie: no SSO session, nothing an app remembers."""
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    return chromium


def wait_for(driver, element_id, what):
    """The element once the page shows it; failing, the page the browser is on."""
    try:
        return WebDriverWait(driver, WAIT).until(lambda d: present(d, element_id))
    except TimeoutException:
        raise AssertionError("%s: no #%s at %s:\n%s"
                             % (what, element_id, driver.current_url, driver.page_source[:3000]))


def present(driver, element_id):
    """The element with `element_id`, or False while the page does not have it (or is being
    replaced under ChromeDriver's feet)."""
    try:
        return driver.find_element(By.ID, element_id)
    except WebDriverException as error:
        if isinstance(error, (NoSuchElementException, StaleElementReferenceException)) or \
                "does not belong to the document" in str(error):
            return False
        raise


def on_login_page(driver, platform, app_name):
    wait_for(driver, "password", "identity's login page")
    assert driver.current_url.startswith(platform.identity.issuer + "/authorize")
    assert app_name in driver.find_element(By.CSS_SELECTOR, ".app").text


def submit(driver):
    """Submits the page's form and waits until the browser has left the page (so that what
    is looked for next is on the answer, not on the page it was posted from)."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, WAIT).until(lambda _: gone(page))


def gone(element):
    """True once `element`'s page has been replaced. ChromeDriver reports an element of a page
    being torn down either as stale or, caught mid-navigation, as an inspector error that its
    node "does not belong to the document"; both mean the browser has left the page."""
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if "does not belong to the document" in str(error):
            return True
        raise


def submit_login(driver, username, password):
    field = driver.find_element(By.ID, "username")
    field.clear()
    field.send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    submit(driver)


def signed_in(driver, app):
    """The sign-in the app just completed (its callback page is showing)."""
    wait_for(driver, "signed-in", "signed in to the %s app" % app.name)
    assert driver.current_url.startswith(app.redirect_uri + "?")
    state = parse_qs(urlsplit(driver.current_url).query)["state"][0]
    (done,) = [s for s in app.sign_ins if s["state"] == state]
    return done


def sign_in_with_password(driver, platform, app, app_name):
    driver.get(app.base + "/login")
    on_login_page(driver, platform, app_name)
    submit_login(driver, "admin", ADMIN_PASSWORD)
    return signed_in(driver, app)


def alert_text(driver):
    alert = WebDriverWait(driver, WAIT).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "p.alert")))
    return alert.text


def test_sign_in_through_the_login_page(platform, browser):
    teacher = platform.teacher
    done = sign_in_with_password(browser, platform, teacher, "教师云 Teacher cloud")
    asked = teacher.requests[done["state"]]
    # What authlib sent: the code flow with PKCE S256, a state and a nonce.
    assert asked["response_type"] == "code" and asked["client_id"] == teacher.client_id
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["redirect_uri"] == teacher.redirect_uri and asked["scope"] == "openid profile"
    assert len(asked["nonce"]) >= 16 and len(asked["state"]) >= 16

    # The ID token authlib verified (RS256 against the JWKS, iss, aud, exp, nonce).
    claims = done["claims"]
    assert claims["iss"] == platform.identity.issuer
    assert claims["aud"] in (teacher.client_id, [teacher.client_id])
    assert claims["azp"] == teacher.client_id
    assert claims["sub"] == platform.admin_id
    assert claims["nonce"] == asked["nonce"]
    assert claims["name"] == "System administrator"
    assert claims["preferred_username"] == "admin"
    assert claims["iat"] <= claims["auth_time"] + 60 and claims["exp"] > claims["iat"]
    assert claims["sid"]
    token = done["token"]
    assert token["token_type"].lower() == "bearer" and token["access_token"]
    # /userinfo with the access token names the same user.
    assert done["userinfo"]["sub"] == platform.admin_id
    assert done["userinfo"]["preferred_username"] == "admin"
    # The SSO cookie: out of scripts' reach, not sent by other sites' subrequests (and, as
    # identity serves plain HTTP here, not marked Secure).
    sso = browser.get_cookie("smartschool_sso")
    assert sso["httpOnly"] is True and sso["sameSite"] == "Lax" and sso["secure"] is False


def test_a_second_app_signs_in_without_a_password(platform, browser):
    first = sign_in_with_password(browser, platform, platform.teacher, "教师云 Teacher cloud")
    # The parent app's sign-in goes through identity, which knows the browser by its SSO
    # cookie: the redirects end at the app's callback, no login page on the way.
    browser.get(platform.parent.base + "/login")
    second = signed_in(browser, platform.parent)
    claims = second["claims"]
    assert claims["aud"] in (platform.parent.client_id, [platform.parent.client_id])
    assert claims["sub"] == first["claims"]["sub"] == platform.admin_id
    # One sign-in: the same identity session and time of authentication.
    assert claims["sid"] == first["claims"]["sid"]
    assert claims["auth_time"] == first["claims"]["auth_time"]
    assert claims["nonce"] == platform.parent.requests[second["state"]]["nonce"]


def test_the_sso_session_is_the_browsers_own(platform, browser):
    sign_in_with_password(browser, platform, platform.teacher, "教师云 Teacher cloud")
    # Without the cookies (another browser), the parent app's sign-in asks for the password.
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.get(platform.parent.base + "/login")
    on_login_page(browser, platform, "家长云 Parent cloud")


def test_a_wrong_password_shows_the_error_and_the_right_one_signs_in(platform, browser):
    browser.get(platform.teacher.base + "/login")
    on_login_page(browser, platform, "教师云 Teacher cloud")
    submit_login(browser, "admin", "Not-the-password-1")
    text = alert_text(browser)
    assert "用户名或密码错误" in text and "Wrong username or password" in text
    # Still the login page, the username kept, no sign-in at the app.
    assert browser.find_element(By.ID, "username").get_attribute("value") == "admin"
    before = len(platform.teacher.sign_ins)
    submit_login(browser, "admin", ADMIN_PASSWORD)
    done = signed_in(browser, platform.teacher)
    assert done["claims"]["sub"] == platform.admin_id
    assert len(platform.teacher.sign_ins) == before + 1


def test_a_form_without_its_csrf_cookie_is_refused(platform, browser):
    browser.get(platform.teacher.base + "/login")
    on_login_page(browser, platform, "教师云 Teacher cloud")
    # As if the form were posted from another site: the double-submit cookie is missing.
    browser.delete_cookie("smartschool_csrf")
    before = len(platform.teacher.sign_ins)
    submit_login(browser, "admin", ADMIN_PASSWORD)
    text = alert_text(browser)
    assert "页面已过期" in text and "did not come from this page" in text
    assert len(platform.teacher.sign_ins) == before
    # The refusal set a new cookie: the same form now works.
    browser.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
    submit(browser)
    signed_in(browser, platform.teacher)


def test_prompt_login_asks_again_and_prompt_none_needs_a_session(platform, browser):
    teacher = platform.teacher
    browser.get(teacher.base + "/login?prompt=none")
    wait_for(browser, "sign-in-failed", "prompt=none without a session")
    assert teacher.errors[-1][0] == "login_required"
    first = sign_in_with_password(browser, platform, teacher, "教师云 Teacher cloud")
    # With the SSO session, prompt=none signs in silently ...
    browser.get(teacher.base + "/login?prompt=none")
    assert signed_in(browser, teacher)["claims"]["sid"] == first["claims"]["sid"]
    # ... and prompt=login shows the login page all the same.
    browser.get(teacher.base + "/login?prompt=login")
    on_login_page(browser, platform, "教师云 Teacher cloud")
    submit_login(browser, "admin", ADMIN_PASSWORD)
    again = signed_in(browser, teacher)
    assert again["claims"]["sub"] == platform.admin_id
    assert again["claims"]["auth_time"] >= first["claims"]["auth_time"]


def test_a_public_client_without_pkce_is_refused(platform, browser):
    parent = platform.parent
    sign_in_with_password(browser, platform, platform.teacher, "教师云 Teacher cloud")
    before = len(parent.sign_ins)
    browser.get(parent.base + "/login?via=nopkce")
    wait_for(browser, "sign-in-failed", "a public client's request without code_challenge")
    state = parse_qs(urlsplit(browser.current_url).query)["state"][0]
    assert "code_challenge" not in parent.requests[state]
    assert parent.errors[-1][0] == "invalid_request"
    assert "PKCE" in parent.errors[-1][1]
    assert "code=" not in browser.current_url and len(parent.sign_ins) == before


def captured_code(platform, browser, client, verifier):
    """A code for `client`'s PKCE challenge of `verifier`, got by the signed-in browser."""
    url, state = client.create_authorization_url(
        platform.metadata["authorization_endpoint"], code_verifier=verifier,
        nonce=generate_token(20))
    browser.get(url)
    wait_for(browser, "captured", "the code sent to /capture")
    (got,) = [c for c in platform.parent.captured if c.get("state") == state]
    assert got["iss"] == platform.identity.issuer
    return got["code"]


def unredeemed_code(platform, browser):
    """Signs the browser in, then has it get a code for the public app at /capture (recorded
    there, not redeemed): answers authlib's plain OAuth 2 client as that app, its PKCE
    verifier and the code."""
    sign_in_with_password(browser, platform, platform.teacher, "教师云 Teacher cloud")
    client = OAuth2Session(platform.parent.client_id, scope="openid profile",
                           redirect_uri=platform.parent.capture_uri,
                           token_endpoint_auth_method="none", code_challenge_method="S256",
                           default_timeout=TIMEOUT)
    verifier = generate_token(48)
    return client, verifier, captured_code(platform, browser, client, verifier)


def test_a_wrong_code_verifier_is_refused_and_spends_the_code(platform, browser):
    client, verifier, code = unredeemed_code(platform, browser)
    token_endpoint = platform.metadata["token_endpoint"]
    with pytest.raises(OAuthError) as refused:
        client.fetch_token(token_endpoint, code=code, code_verifier=generate_token(48))
    assert refused.value.error == "invalid_grant"
    assert "code_verifier" in refused.value.description
    # Without a verifier at all, and then with the right one: the code had its one try.
    for attempt in ({}, {"code_verifier": verifier}):
        with pytest.raises(OAuthError) as again:
            client.fetch_token(token_endpoint, code=code, **attempt)
        assert again.value.error == "invalid_grant"


def test_a_replayed_code_is_refused(platform, browser):
    client, verifier, code = unredeemed_code(platform, browser)
    token_endpoint = platform.metadata["token_endpoint"]
    token = client.fetch_token(token_endpoint, code=code, code_verifier=verifier)
    assert token["id_token"] and token["access_token"]
    with pytest.raises(OAuthError) as replayed:
        client.fetch_token(token_endpoint, code=code, code_verifier=verifier)
    assert replayed.value.error == "invalid_grant"
    # Nor may another client redeem a code it was not given, even with its own secret.
    code = captured_code(platform, browser, client, verifier)
    thief = OAuth2Session(platform.teacher.client_id, platform.teacher_secret,
                          default_timeout=TIMEOUT)
    with pytest.raises(OAuthError) as stolen:
        thief.fetch_token(token_endpoint, code=code, code_verifier=verifier,
                          redirect_uri=platform.parent.capture_uri)
    assert stolen.value.error == "invalid_grant"


def test_an_expired_code_is_refused(tmp_path, browser):
    """A code left unredeemed past --authorization-code-ttl is refused; one redeemed in time,
    from the same signed-in browser and client, works."""
    app = RelyingParty("slow")
    try:
        for identity in serve_identity(tmp_path / "store", ADMIN_PASSWORD,
                                       "--authorization-code-ttl", "5"):
            cli = Cli(identity, tmp_path)
            cli.login("admin", ADMIN_PASSWORD)
            client_id, _ = cli.oidc_client(
                tmp_path, "慢应用 Slow app", [app.capture_uri], "--public", "--scope", "openid",
                "--scope", "profile")
            metadata = requests.get(identity.issuer + "/.well-known/openid-configuration",
                                    timeout=TIMEOUT).json()
            client = OAuth2Session(client_id, scope="openid profile",
                                   redirect_uri=app.capture_uri,
                                   token_endpoint_auth_method="none",
                                   code_challenge_method="S256", default_timeout=TIMEOUT)

            def code_for(verifier, sign_in):
                url, state = client.create_authorization_url(
                    metadata["authorization_endpoint"], code_verifier=verifier,
                    nonce=generate_token(20))
                browser.get(url)
                if sign_in:
                    wait_for(browser, "password", "identity's login page")
                    submit_login(browser, "admin", ADMIN_PASSWORD)
                wait_for(browser, "captured", "the code sent to /capture")
                (got,) = [c for c in app.captured if c.get("state") == state]
                return got["code"], time.monotonic()

            verifier = generate_token(48)
            code, issued = code_for(verifier, sign_in=True)
            time.sleep(max(0.0, issued + 6.5 - time.monotonic()))
            with pytest.raises(OAuthError) as expired:
                client.fetch_token(metadata["token_endpoint"], code=code,
                                   code_verifier=verifier)
            assert expired.value.error == "invalid_grant"
            fresh = generate_token(48)
            code, _ = code_for(fresh, sign_in=False)
            token = client.fetch_token(metadata["token_endpoint"], code=code, code_verifier=fresh)
            assert token["id_token"] and token["access_token"]
    finally:
        app.stop()


def test_an_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(platform, browser):
    sign_in_with_password(browser, platform, platform.teacher, "教师云 Teacher cloud")
    before = len(platform.parent.captured)
    for redirect_uri in (platform.parent.base + "/elsewhere",
                         platform.parent.capture_uri + "/",
                         "https://attacker.example/capture"):
        query = urlencode({"response_type": "code", "client_id": platform.parent.client_id,
                           "redirect_uri": redirect_uri, "scope": "openid",
                           "state": generate_token(16), "code_challenge_method": "S256",
                           "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"})
        browser.get(platform.metadata["authorization_endpoint"] + "?" + query)
        text = alert_text(browser)
        assert "回调地址（redirect_uri）与该应用登记的不一致" in text, redirect_uri
        assert "does not match" in text
        assert browser.current_url.startswith(platform.identity.issuer + "/authorize?")
    assert len(platform.parent.captured) == before


def test_a_disabled_app_signs_nobody_in(platform, browser):
    app = RelyingParty("retired")
    try:
        client_id, secret = platform.cli.oidc_client(
            platform.folder, "Retired app", [app.redirect_uri], "--scope", "openid",
            "--scope", "profile")
        app.register(platform.identity.issuer, client_id, secret)
        sign_in_with_password(browser, platform, app, "Retired app")
        platform.cli.run("oidc-client", "disable", client_id)
        # The SSO session is still there; the disabled app gets an error page, no code.
        browser.get(app.base + "/login")
        text = alert_text(browser)
        assert "该应用未注册或已停用" in text and "disabled" in text
        assert browser.current_url.startswith(platform.identity.issuer + "/authorize?")
    finally:
        app.stop()


def test_logout_from_one_app_ends_the_sign_in_at_both(platform, browser):
    teacher, parent = platform.teacher, platform.parent
    assert platform.metadata["end_session_endpoint"] == platform.identity.issuer + "/logout"
    sign_in_with_password(browser, platform, teacher, "教师云 Teacher cloud")
    browser.get(parent.base + "/login")
    at_parent = signed_in(browser, parent)
    userinfo = platform.metadata["userinfo_endpoint"]
    bearer = {"Authorization": "Bearer " + at_parent["token"]["access_token"]}
    assert requests.get(userinfo, headers=bearer, timeout=TIMEOUT).status_code == 200
    # The teacher app sends the browser to identity's end_session_endpoint with its ID token;
    # identity ends the sign-in and returns to the registered URI with authlib's state.
    browser.get(teacher.base + "/logout")
    wait_for(browser, "signed-out", "back at the teacher app after logout")
    assert browser.current_url.startswith(teacher.signed_out_uri + "?state=")
    # The parent app's next sign-in asks for the password again ...
    browser.get(parent.base + "/login")
    on_login_page(browser, platform, "家长云 Parent cloud")
    # ... and the tokens of the ended sign-in are refused.
    answer = requests.get(userinfo, headers=bearer, timeout=TIMEOUT)
    assert answer.status_code == 401 and "invalid_token" in answer.headers["WWW-Authenticate"]


def test_logout_to_an_unregistered_uri_is_refused_and_ends_nothing(platform, browser):
    first = sign_in_with_password(browser, platform, platform.teacher, "教师云 Teacher cloud")
    query = urlencode({"id_token_hint": first["token"]["id_token"],
                       "post_logout_redirect_uri": platform.parent.signed_out_uri,
                       "state": generate_token(16)})
    browser.get(platform.metadata["end_session_endpoint"] + "?" + query)
    text = alert_text(browser)
    assert "post_logout_redirect_uri" in text and "not registered" in text
    # Still signed in: the parent app gets in without a password.
    browser.get(platform.parent.base + "/login")
    assert signed_in(browser, platform.parent)["claims"]["sid"] == first["claims"]["sid"]


def test_logout_without_an_id_token_asks_the_user_first(platform, browser):
    first = sign_in_with_password(browser, platform, platform.teacher, "教师云 Teacher cloud")
    # A bare link to /logout (any site could embed one) only shows a confirmation form.
    browser.get(platform.metadata["end_session_endpoint"])
    WebDriverWait(browser, WAIT).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "button[name=confirm]")))
    browser.get(platform.parent.base + "/login")
    assert signed_in(browser, platform.parent)["claims"]["sid"] == first["claims"]["sid"]
    browser.get(platform.metadata["end_session_endpoint"])
    confirm = WebDriverWait(browser, WAIT).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "button[name=confirm]")))
    confirm.click()
    WebDriverWait(browser, WAIT).until(EC.title_contains("Signed out"))
    browser.get(platform.parent.base + "/login")
    on_login_page(browser, platform, "家长云 Parent cloud")


@pytest.fixture(scope="module")
def totp_platform(tmp_path_factory):
    """An identity of its own whose admin has enrolled TOTP (with the CLI and pyotp), and an
    app registered there."""
    folder = tmp_path_factory.mktemp("identity-totp")
    for identity in serve_identity(folder / "store", ADMIN_PASSWORD,
                                   "--login-attempts-per-account", "0"):
        cli = Cli(identity, folder)
        cli.login("admin", ADMIN_PASSWORD)
        app = RelyingParty("official")
        try:
            client_id, secret = cli.oidc_client(
                folder, "督导平台 Inspection app", [app.redirect_uri], "--scope", "openid",
                "--scope", "profile")
            app.register(identity.issuer, client_id, secret)
            enrol = cli.run("totp", "enrol")
            totp = pyotp.parse_uri(re.search(r"uri:\s+(\S+)", enrol.stdout).group(1))
            confirm = cli.run("totp", "confirm", "--code", totp.now())
            recovery = re.findall(r"^\s+([A-Z0-9]{5}-[A-Z0-9]{5})$", confirm.stdout, re.M)
            assert len(recovery) == 10
            yield SimpleNamespace(identity=identity, app=app, totp=totp, recovery=recovery)
        finally:
            app.stop()


def second_factor_page(driver):
    wait_for(driver, "code", "the two-step verification page")
    assert "两步验证" in driver.title and "Two-step verification" in driver.title


def submit_code(driver, code):
    field = driver.find_element(By.ID, "code")
    field.clear()
    field.send_keys(code)
    submit(driver)


def test_two_factor_sign_in_with_codes_from_pyotp(totp_platform, browser):
    app = totp_platform.app
    browser.get(app.base + "/login")
    wait_for(browser, "password", "identity's login page")
    submit_login(browser, "admin", ADMIN_PASSWORD)
    second_factor_page(browser)
    assert not browser.find_elements(By.ID, "totp-secret"), "enrolled: no new secret shown"
    # The password alone signed nobody in: no SSO cookie yet.
    assert browser.get_cookie("smartschool_sso") is None
    submit_code(browser, pyotp.TOTP(pyotp.random_base32()).now())
    text = alert_text(browser)
    assert "验证码错误" in text and "wrong" in text
    # The next step's code (identity allows one step of skew; the enrolment may have used the
    # current one).
    code = totp_platform.totp.at(time.time() + 30)
    submit_code(browser, code)
    done = signed_in(browser, app)
    assert done["claims"]["preferred_username"] == "admin"
    # Another browser: the same code again is refused (used once), a recovery code works.
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.get(app.base + "/login")
    wait_for(browser, "password", "identity's login page")
    submit_login(browser, "admin", ADMIN_PASSWORD)
    second_factor_page(browser)
    submit_code(browser, code)
    assert "已使用" in alert_text(browser)
    submit_code(browser, totp_platform.recovery[0])
    assert signed_in(browser, app)["claims"]["sub"] == done["claims"]["sub"]


def test_an_official_covered_by_the_policy_enrols_two_factor_on_the_web(tmp_path, browser):
    app = RelyingParty("county")
    try:
        # The app is registered first; then identity restarts with TOTP required for admins.
        for identity in serve_identity(tmp_path / "store", ADMIN_PASSWORD):
            cli = Cli(identity, tmp_path)
            cli.login("admin", ADMIN_PASSWORD)
            client_id, secret = cli.oidc_client(
                tmp_path, "县教育局 County bureau", [app.redirect_uri], "--scope", "openid",
                "--scope", "profile")
        for identity in serve_identity(tmp_path / "store", ADMIN_PASSWORD,
                                       "--require-totp-for", "system_admin"):
            app.register(identity.issuer, client_id, secret)
            browser.get(app.base + "/login")
            wait_for(browser, "password", "identity's login page")
            submit_login(browser, "admin", ADMIN_PASSWORD)
            second_factor_page(browser)
            # The page shows the new secret; pyotp computes the code an authenticator would.
            secret_text = browser.find_element(By.ID, "totp-secret").text.replace(" ", "")
            link = browser.find_element(By.CSS_SELECTOR, "a[href^='otpauth://']")
            totp = pyotp.parse_uri(link.get_attribute("href"))
            assert totp.secret == secret_text and totp.name == "admin"
            submit_code(browser, totp.now())
            codes = wait_for(browser, "recovery-codes", "the recovery codes page")
            assert len(codes.find_elements(By.TAG_NAME, "li")) == 10
            browser.find_element(By.ID, "continue").click()
            assert signed_in(browser, app)["claims"]["preferred_username"] == "admin"
    finally:
        app.stop()


@pytest.fixture(scope="module")
def catalogue(platform, tmp_path_factory):
    """catalogue-service verifying identity's tokens (keys fetched from identity)."""
    yield from serve(ServiceProcess("catalogue", tmp_path_factory.mktemp("catalogue"),
                                    "--identity-addr", platform.identity.address))


def grpc_call(address, method, token):
    """(status code, details) of a unary call with an empty request and the bearer token,
    through grpcio (the status is what matters here, not the answer)."""
    with grpc.insecure_channel(address) as channel:
        try:
            channel.unary_unary(method)(b"", metadata=[("authorization", "Bearer " + token)],
                                        timeout=TIMEOUT)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            return error.code(), error.details()


LIST_RESOURCES = "/smartschool.catalogue.v1.CatalogueService/ListResources"
WHO_AM_I = "/smartschool.identity.v1.IdentityService/WhoAmI"


def test_a_token_is_refused_at_a_service_outside_its_audience(platform, catalogue, browser):
    identity = platform.identity
    app = RelyingParty("library")
    try:
        client_id, secret = platform.cli.oidc_client(
            platform.folder, "资源库 Library", [app.redirect_uri], "--scope", "openid",
            "--scope", "profile", "--scope", "catalogue", "--service", "catalogue")
        app.register(identity.issuer, client_id, secret)
        library = sign_in_with_password(browser, platform, app, "资源库 Library")["token"]
    finally:
        app.stop()
    # The library app's token works at catalogue, the one service it may call, not at identity.
    assert grpc_call(catalogue.address, LIST_RESOURCES, library["access_token"]) == \
        (grpc.StatusCode.OK, "")
    code, details = grpc_call(identity.address, WHO_AM_I, library["access_token"])
    assert code == grpc.StatusCode.UNAUTHENTICATED and "identity" in details, details
    # The teacher app may call no service: its token (the same user's) is refused at catalogue.
    browser.get(platform.teacher.base + "/login")
    teacher = signed_in(browser, platform.teacher)["token"]
    code, details = grpc_call(catalogue.address, LIST_RESOURCES, teacher["access_token"])
    assert code == grpc.StatusCode.UNAUTHENTICATED and "catalogue" in details, details
    # A first-party token (the CLI's login) keeps working at both.
    session = json.loads((platform.folder / "session.json").read_text())
    first_party = session["tokens"]["accessToken"]
    for address, method in ((catalogue.address, LIST_RESOURCES), (identity.address, WHO_AM_I)):
        assert grpc_call(address, method, first_party) == (grpc.StatusCode.OK, ""), method


def test_refresh_rotation_and_revocation_through_authlib(platform, browser):
    app = RelyingParty("archive")
    try:
        client_id, secret = platform.cli.oidc_client(
            platform.folder, "档案 Archive", [app.redirect_uri], "--scope", "openid",
            "--scope", "profile", "--scope", "offline_access")
        app.register(platform.identity.issuer, client_id, secret,
                     scope="openid profile offline_access")
        first = sign_in_with_password(browser, platform, app, "档案 Archive")["token"]
    finally:
        app.stop()
    metadata = platform.metadata
    assert first["refresh_token"], "offline_access was granted: a refresh token"
    client = OAuth2Session(client_id, secret, token=first, default_timeout=TIMEOUT)
    second = client.refresh_token(metadata["token_endpoint"])
    # (The access token may come out the same: identity's tokens carry second-granular times.)
    assert second["refresh_token"] != first["refresh_token"]
    userinfo = metadata["userinfo_endpoint"]

    def userinfo_status(token):
        bearer = {"Authorization": "Bearer " + token["access_token"]}
        return requests.get(userinfo, headers=bearer, timeout=TIMEOUT).status_code

    assert userinfo_status(second) == 200
    # The rotated-out refresh token used again: refused, and the whole grant ends with it.
    with pytest.raises(OAuthError) as reused:
        client.refresh_token(metadata["token_endpoint"], refresh_token=first["refresh_token"])
    assert reused.value.error == "invalid_grant"
    assert userinfo_status(second) == 401
    introspected = client.introspect_token(metadata["introspection_endpoint"],
                                           token=second["access_token"]).json()
    assert introspected == {"active": False}
    # A new sign-in (SSO, no password) gets a new grant; revoking its refresh token ends it.
    browser.get(platform.teacher.base + "/login")
    teacher = signed_in(browser, platform.teacher)["token"]
    assert userinfo_status(teacher) == 200
    active = OAuth2Session(platform.teacher.client_id, platform.teacher_secret,
                           default_timeout=TIMEOUT)
    answer = active.introspect_token(metadata["introspection_endpoint"],
                                     token=teacher["access_token"]).json()
    assert answer["active"] is True and answer["sub"] == platform.admin_id
    assert answer["client_id"] == platform.teacher.client_id
    revoked = active.revoke_token(metadata["revocation_endpoint"],
                                  token=teacher["access_token"])
    assert revoked.status_code == 200 and userinfo_status(teacher) == 401


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class Terminal:
    """A classroom terminal (a public client, 一码通): it starts a device authorization with
    requests and polls the token endpoint with authlib as RFC 8628 says, every `interval`
    seconds (5 more after a slow_down), in a thread of its own, until an answer other than
    authorization_pending or slow_down, or until its deadline."""

    def __init__(self, platform, client_id):
        self.metadata = platform.metadata
        started = requests.post(platform.metadata["device_authorization_endpoint"],
                                data={"client_id": client_id, "scope": "openid profile"},
                                timeout=TIMEOUT)
        assert started.status_code == 200, started.text
        self.device = started.json()
        self.client = OAuth2Session(client_id, token_endpoint_auth_method="none",
                                    default_timeout=TIMEOUT)
        self.answers = []   # the error of each poll, or the tokens

    def poll(self):
        try:
            token = self.client.fetch_token(self.metadata["token_endpoint"],
                                            grant_type=DEVICE_GRANT,
                                            device_code=self.device["device_code"])
        except OAuthError as error:
            self.answers.append(error.error)
            return error.error
        self.answers.append(token)
        return token

    def poll_until_answered(self, seconds=WAIT + 10):
        def run():
            interval, deadline = self.device["interval"], time.monotonic() + seconds
            while time.monotonic() < deadline:
                answer = self.poll()
                if answer == "slow_down":
                    interval += 5
                elif answer != "authorization_pending":
                    return
                time.sleep(interval)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def answer(self):
        self.thread.join(timeout=WAIT + 20)
        assert not self.thread.is_alive(), "the terminal was still polling: %s" % self.answers
        return self.answers[-1]


@pytest.fixture(scope="module")
def terminal_client(platform):
    client_id, secret = platform.cli.oidc_client(
        platform.folder, "教室终端 Classroom terminal", ["http://127.0.0.1/terminal"],
        "--public", "--scope", "openid", "--scope", "profile")
    assert secret is None
    return client_id


def test_a_terminal_signs_in_when_a_teacher_approves_on_the_phone(platform, terminal_client,
                                                                   browser):
    terminal = Terminal(platform, terminal_client)
    device = terminal.device
    issuer = platform.identity.issuer
    assert device["verification_uri"] == issuer + "/device"
    assert device["verification_uri_complete"].startswith(issuer + "/device?user_code=")
    assert re.fullmatch(r"[B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4}", device["user_code"])
    assert device["expires_in"] > 0 and device["interval"] >= 1
    terminal.poll_until_answered()
    # The teacher scans the QR code (verification_uri_complete), signs in, checks the code.
    browser.get(device["verification_uri_complete"])
    wait_for(browser, "password", "the sign-in page for the device")
    assert "教室终端 Classroom terminal" in browser.page_source
    submit_login(browser, "admin", ADMIN_PASSWORD)
    assert wait_for(browser, "user-code", "the approval page").text == device["user_code"]
    browser.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    WebDriverWait(browser, WAIT).until(EC.title_contains("Approved"))
    token = terminal.answer()
    assert isinstance(token, dict), terminal.answers
    assert set(terminal.answers[:-1]) <= {"authorization_pending"}, terminal.answers
    # The terminal's tokens: an ID token for it, signed with the JWKS, naming the teacher.
    jwks = jwt.PyJWKClient(platform.metadata["jwks_uri"])
    claims = jwt.decode(token["id_token"], jwks.get_signing_key_from_jwt(token["id_token"]).key,
                        algorithms=["RS256"], audience=terminal_client, issuer=issuer)
    assert claims["sub"] == platform.admin_id and claims["preferred_username"] == "admin"
    bearer = {"Authorization": "Bearer " + token["access_token"]}
    who = requests.get(platform.metadata["userinfo_endpoint"], headers=bearer, timeout=TIMEOUT)
    assert who.json()["sub"] == platform.admin_id
    # The device code gave its tokens once.
    assert terminal.poll() == "invalid_grant"


def test_a_terminal_polling_too_fast_is_slowed_and_a_denial_is_final(platform,
                                                                     terminal_client, browser):
    sign_in_with_password(browser, platform, platform.teacher, "教师云 Teacher cloud")
    terminal = Terminal(platform, terminal_client)
    assert terminal.poll() == "authorization_pending"
    assert terminal.poll() == "slow_down"
    # Typed by hand on the verification page, as a user reads it: any case, no dash.
    browser.get(terminal.device["verification_uri"])
    field = wait_for(browser, "user_code", "the code entry page")
    field.send_keys(terminal.device["user_code"].replace("-", "").lower())
    submit(browser)
    # Signed in already (SSO): straight to the approval page.
    assert wait_for(browser, "user-code", "the approval page").text == \
        terminal.device["user_code"]
    browser.find_element(By.CSS_SELECTOR, "button[value=deny]").click()
    WebDriverWait(browser, WAIT).until(EC.title_contains("Denied"))
    assert terminal.poll() == "access_denied"
    # The code cannot be approved afterwards.
    browser.get(terminal.device["verification_uri_complete"])
    assert "已使用" in alert_text(browser)


def test_a_locked_account_is_told_so_even_with_the_right_password(tmp_path, browser):
    app = RelyingParty("locked")
    try:
        for identity in serve_identity(tmp_path / "store", ADMIN_PASSWORD,
                                       "--lockout-threshold", "2", "--lockout-seconds", "120",
                                       "--login-attempts-per-account", "0"):
            cli = Cli(identity, tmp_path)
            cli.login("admin", ADMIN_PASSWORD)
            client_id, secret = cli.oidc_client(
                tmp_path, "家校通 School app", [app.redirect_uri], "--scope", "openid",
                "--scope", "profile")
            app.register(identity.issuer, client_id, secret)
            browser.get(app.base + "/login")
            wait_for(browser, "password", "identity's login page")
            submit_login(browser, "admin", "Not-the-password-1")
            assert "用户名或密码错误" in alert_text(browser)
            # The second wrong guess reaches the threshold (shared with gRPC Login).
            submit_login(browser, "admin", "Not-the-password-2")
            assert "锁定" in alert_text(browser)
            submit_login(browser, "admin", ADMIN_PASSWORD)
            text = alert_text(browser)
            assert "账号已暂时锁定" in text and "locked" in text
            assert not app.sign_ins
            # gRPC Login (the CLI) is locked out the same.
            assert cli.run("login", "--username", "admin", "--password-stdin",
                           stdin=ADMIN_PASSWORD + "\n", check=False).returncode != 0
    finally:
        app.stop()
