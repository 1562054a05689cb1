<%-- seamless test guest: the session servlet (web.xml maps /counter here); the count lives in the HTTP session. --%><%@ page contentType="text/plain" %><%
  Integer n = (Integer) session.getAttribute("n");
  n = (n == null) ? 1 : n + 1;
  session.setAttribute("n", n);
%>count <%= n %> session <%= session.getId() %>
