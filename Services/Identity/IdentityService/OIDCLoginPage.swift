import Foundation
import ServiceRuntime

/// The pages a browser sees at identity: the sign-in form and the error page. Chinese first
/// with English beside it; no script and no external asset (styles inline), so they work
/// without JavaScript and behind a strict Content-Security-Policy; a viewport for phones.
enum OIDCPages {
  /// The sign-in form for `clientName`. `hidden` carries the authorization request through
  /// the POST; `message` (Chinese, English) says why the last attempt failed.
  static func login(
    clientName: String, action: String, hidden: [(String, String)], csrf: String,
    username: String, message: (zh: String, en: String)?
  ) -> String {
    let fields = (hidden + [("csrf", csrf)]).map {
      "<input type=\"hidden\" name=\"\(escapeHTML($0.0))\" value=\"\(escapeHTML($0.1))\">"
    }.joined(separator: "\n")
    let notice = message.map { alert($0.zh, $0.en) } ?? ""
    return page(
      title: "登录 Sign in",
      body: """
        <h1>统一身份认证<br><span lang="en">SmartSchool sign-in</span></h1>
        <p class="app">登录到 <strong>\(escapeHTML(clientName))</strong><br>
        <span lang="en">to continue to \(escapeHTML(clientName))</span></p>
        \(notice)
        <form method="post" action="\(escapeHTML(action))">
        \(fields)
        <label for="username">用户名 <span lang="en">Username</span></label>
        <input id="username" name="username" value="\(escapeHTML(username))" required
          autocomplete="username" autocapitalize="none" spellcheck="false" maxlength="64">
        <label for="password">密码 <span lang="en">Password</span></label>
        <input id="password" name="password" type="password" required
          autocomplete="current-password" maxlength="1024">
        <button type="submit">登录 <span lang="en">Sign in</span></button>
        </form>
        """)
  }

  /// A page that stops the flow (a bad client or redirect URI is never redirected to).
  static func error(_ zh: String, _ en: String) -> String {
    page(
      title: "无法登录 Cannot sign in",
      body: """
        <h1>无法登录<br><span lang="en">Cannot sign in</span></h1>
        \(alert(zh, en))
        <p>请返回应用重试，或联系应用的提供方。<br>
        <span lang="en">Go back to the app and try again, or contact its provider.</span></p>
        """)
  }

  /// Why the last attempt failed, in both languages.
  static func alert(_ zh: String, _ en: String) -> String {
    """
    <p class="alert" role="alert">\(escapeHTML(zh))<br>
    <span lang="en">\(escapeHTML(en))</span></p>
    """
  }

  static func page(title: String, body: String) -> String {
    """
    <!doctype html>
    <html lang="zh-CN">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>\(escapeHTML(title))</title>
    <style>
    body{margin:0;font-family:system-ui,"PingFang SC","Noto Sans CJK SC","Microsoft YaHei",sans-serif;background:#f3f5f8;color:#1c2430}
    main{max-width:24rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:.5rem;box-shadow:0 1px 4px rgba(0,0,0,.12)}
    h1{font-size:1.35rem;margin:0 0 1rem}
    [lang=en]{color:#5a6472;font-size:.9em;font-weight:normal}
    label{display:block;margin:1rem 0 .3rem}
    input{box-sizing:border-box;width:100%;padding:.65rem;font-size:1rem;border:1px solid #b8c0cc;border-radius:.3rem}
    button{margin-top:1.4rem;width:100%;padding:.75rem;font-size:1.05rem;border:0;border-radius:.3rem;background:#1f5fbf;color:#fff}
    .alert{background:#fdecea;border-left:4px solid #c62828;padding:.6rem .8rem}
    .app strong{word-break:break-word}
    @media (max-width:26rem){main{margin:0;border-radius:0;box-shadow:none;min-height:100vh}}
    </style>
    </head>
    <body>
    <main>
    \(body)
    </main>
    </body>
    </html>

    """
  }
}
